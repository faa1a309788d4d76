package kerneltest

import (
	"bytes"
	"os"
	"strconv"
	"time"
)

// Usage is a reading of CPU time: the process's own, and the machine's by
// state where the system reports it (Linux's /proc/stat). Two readings
// around a measurement tell how much CPU each call cost and how much of
// the machine was busy, or taken by the hypervisor (steal), meanwhile: on
// a shared virtual machine, the second explains runs that the first does
// not.
type Usage struct {
	process time.Duration // user + system time of this process
	// The machine, in clock ticks: busy (user, nice, system, irq,
	// softirq), stolen, and all states; total is 0 where unknown.
	busy, steal, total uint64
}

// CPU is what a measurement used, from two Usage readings.
type CPU struct {
	// UsPerCall is the process's CPU time per call, in µs: all of its
	// goroutines, clients and servers alike.
	UsPerCall float64 `json:"cpu_us_per_call"`
	// Busy and Steal are the shares of the machine's CPU time that was
	// busy and that the hypervisor took; both are 0 where the system does
	// not report them.
	Busy  float64 `json:"host_busy,omitempty"`
	Steal float64 `json:"host_steal,omitempty"`
}

// ReadUsage reads the process's and the machine's CPU time now.
func ReadUsage() Usage {
	u := Usage{process: processCPU()}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return u
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := bytes.Fields(line)
	// cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 9 || string(f[0]) != "cpu" {
		return u
	}
	var v [8]uint64
	for i := range v {
		if v[i], err = strconv.ParseUint(string(f[i+1]), 10, 64); err != nil {
			return u
		}
	}
	u.busy = v[0] + v[1] + v[2] + v[5] + v[6]
	u.steal = v[7]
	for _, x := range v {
		u.total += x
	}
	return u
}

// Since returns the CPU used between prev and u, for calls calls.
func (u Usage) Since(prev Usage, calls int) CPU {
	var c CPU
	if calls > 0 {
		c.UsPerCall = float64((u.process - prev.process).Nanoseconds()) / 1e3 / float64(calls)
	}
	if prev.total > 0 && u.total > prev.total {
		total := float64(u.total - prev.total)
		c.Busy = float64(u.busy-prev.busy) / total
		c.Steal = float64(u.steal-prev.steal) / total
	}
	return c
}
