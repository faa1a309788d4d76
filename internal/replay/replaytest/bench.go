package replaytest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/osmose-os/osmose/schema"
	"github.com/osmose-os/osmose/sim"
)

// BenchConfig sizes the ledger Bench writes.
type BenchConfig struct {
	// Calls is how many calls the programs make in all: the ledger holds
	// about two entries per admitted call (call and return) and one per
	// denied one.
	Calls int
	// Rooms is the number of rooms, each with one program on its own
	// connection calling the devices of its room concurrently with the
	// others. Default 8, at most 99.
	Rooms int
	// Seed derives the building's keys.
	Seed int64
}

// Bench writes a ledger into the data directory dir with a real kernel:
// in each room the occupancy sensor's program opens the room's lights,
// thermostat and display and calls them, a tenth of the light levels
// above what the policy allows (denied), with light and thermostat state
// reads and display updates among them. The clock moves one second
// between rounds of calls, never while one is in flight. It returns the
// ledger's size.
func Bench(ctx context.Context, dir string, c BenchConfig) (int64, error) {
	if c.Rooms <= 0 {
		c.Rooms = 8
	}
	top, err := sim.Generate(sim.GenConfig{Floors: 1, Rooms: c.Rooms, DevicesPerRoom: 8, Seed: c.Seed})
	if err != nil {
		return 0, err
	}
	k, err := StartKernel(ctx, Config{Dir: dir, Topology: top, Seed: c.Seed})
	if err != nil {
		return 0, err
	}
	progs := make([]*program, c.Rooms)
	for i := range progs {
		room := fmt.Sprintf("campus/hq/f1/r1%02d", i+1)
		s, err := k.Login(ctx, room+"/occupancy")
		if err != nil {
			k.Close()
			return 0, err
		}
		cs, _, err := s.Open(room, nil, schema.DeviceClass_light, schema.DeviceClass_thermostat, schema.DeviceClass_display)
		if err != nil {
			k.Close()
			return 0, fmt.Errorf("open %s: %w", room, err)
		}
		p := &program{s: s}
		var opened []schema.DeviceClass
		for _, d := range top.Under(room) {
			switch d.Class {
			case schema.DeviceClass_light, schema.DeviceClass_thermostat, schema.DeviceClass_display:
				opened = append(opened, d.Class)
			}
		}
		if len(opened) != len(cs) {
			k.Close()
			return 0, fmt.Errorf("open %s: %d capabilities for %d devices", room, len(cs), len(opened))
		}
		for j, c := range cs {
			switch opened[j] {
			case schema.DeviceClass_light:
				p.lights = append(p.lights, c)
			case schema.DeviceClass_thermostat:
				p.thermostat = c
			case schema.DeviceClass_display:
				p.display = c
			}
		}
		if len(p.lights) == 0 || !p.thermostat.IsValid() || !p.display.IsValid() {
			k.Close()
			return 0, fmt.Errorf("open %s: %d lights, thermostat %v, display %v", room, len(p.lights), p.thermostat.IsValid(), p.display.IsValid())
		}
		progs[i] = p
	}
	const round = 64
	per := c.Calls / c.Rooms
	var first error
	var mu sync.Mutex
	for done := 0; done < per; done += round {
		var wg sync.WaitGroup
		for i, p := range progs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := done; j < min(done+round, per); j++ {
					if err := p.call(ctx, i, j); err != nil {
						mu.Lock()
						first = cmpErr(first, err)
						mu.Unlock()
						return
					}
				}
			}()
		}
		wg.Wait()
		if first != nil {
			break
		}
		k.Clock.Set(k.Clock.Now().Add(time.Second))
	}
	for _, p := range progs {
		for _, l := range p.lights {
			l.Release()
		}
		p.thermostat.Release()
		p.display.Release()
		if err := p.s.Logout(); err != nil && first == nil {
			first = err
		}
	}
	size := k.Led.Size()
	if err := k.Close(); err != nil && first == nil {
		first = err
	}
	return size, first
}

// program is one room's program in Bench.
type program struct {
	s                   *Session
	lights              []capnp.Client
	thermostat, display capnp.Client
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// call makes program i's j-th call: mostly light levels (those above 80
// denied by sim.Policy), and every fourth a light or thermostat state
// read, a setpoint or a display update.
func (p *program) call(ctx context.Context, i, j int) error {
	l := p.lights[j%len(p.lights)]
	if j%4 != 3 {
		level := uint8(j * 7 % 90)
		err := SetLevel(ctx, l, level)
		if level > 80 {
			if err == nil {
				return fmt.Errorf("setLevel %d admitted", level)
			}
			return nil
		}
		return err
	}
	var err error
	switch j / 4 % 4 {
	case 0:
		err = LightState(ctx, l)
	case 1:
		f, rel := schema.Thermostat(p.thermostat).SetSetpoint(ctx, func(q schema.Thermostat_setSetpoint_Params) error {
			q.SetCelsius(17 + float64(j%6))
			return nil
		})
		_, err = f.Struct()
		rel()
	case 2:
		f, rel := schema.Thermostat(p.thermostat).State(ctx, nil)
		_, err = f.Struct()
		rel()
	case 3:
		f, rel := schema.Display(p.display).Show(ctx, func(q schema.Display_show_Params) error {
			return q.SetText(fmt.Sprintf("room %d, call %d", i+1, j))
		})
		_, err = f.Struct()
		rel()
	}
	return err
}
