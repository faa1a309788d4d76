package replay

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/osmose-os/osmose/ledger"
)

// Report says what a replay checked.
type Report struct {
	// Entries is how many entries were replayed: seqs 0 to Last.
	Entries uint64 `json:"entries"`
	Last    uint64 `json:"last"`
	// Size is the ledger's durable size.
	Size int64 `json:"size"`
	// Runs counts kernel runs (start entries).
	Runs int `json:"runs"`
	// Kinds tallies the entries of each kind.
	Kinds map[ledger.Kind]*Tally `json:"kinds"`
	// Inputs says why entries were taken as recorded rather than re-derived,
	// with how many of each.
	Inputs map[string]int `json:"inputs"`
	// Results tallies the results of admitted calls on devices.
	Results Results `json:"results"`
	// Drivers reports whether the drivers were re-run (Options.Drivers).
	Drivers bool `json:"drivers"`
	// Reader is how entries were read: "store" (the fast reader) or
	// "ledger" (Ledger.Read).
	Reader  string        `json:"reader"`
	Elapsed time.Duration `json:"elapsed_ns"`
	// Notes are things worth knowing that are not failures.
	Notes []string `json:"notes,omitempty"`
}

// Tally counts the entries of one kind by what replay did with them.
type Tally struct {
	// Checked entries were re-derived and matched: a decision asked again
	// of the caps table, a topology or policy loaded, a result reproduced.
	Checked int `json:"checked"`
	// Input entries were taken as recorded: what replay cannot re-derive
	// (a login's signature check, a session's end, a sensor's reading).
	Input int `json:"input"`
	// Opaque entries had a body erased (a redaction lists it): replayed
	// as steps whose content is unknown, never failures.
	Opaque int `json:"opaque"`
	// Skipped entries are of a kind replay does not interpret.
	Skipped int `json:"skipped"`
}

// Results tallies what replay did with the results of admitted calls.
type Results struct {
	// Reproduced results: re-running the device's driver on the replayed
	// calls gave the recorded CID (or the recorded error).
	Reproduced int `json:"reproduced"`
	// World results were reproduced with the world's values taken from
	// the record: a sensor's reading, a thermostat's measured temperature,
	// a door's contact, whether a speaker still plays, a microphone's
	// format. Every other field of them was checked.
	World int `json:"world"`
	// Hardware failures: recorded driver errors that came from the
	// hardware (the driver had called it), taken as inputs.
	Hardware int `json:"hardware"`
	// Interrupted calls: their grant ended while the driver had them; the
	// driver may or may not have acted.
	Interrupted int `json:"interrupted"`
	// Unchecked results, by why.
	Unchecked map[string]int `json:"unchecked"`
}

func newReport() Report {
	return Report{Kinds: map[ledger.Kind]*Tally{}, Inputs: map[string]int{}, Results: Results{Unchecked: map[string]int{}}}
}

func (r *Report) tally(k ledger.Kind) *Tally {
	t := r.Kinds[k]
	if t == nil {
		t = &Tally{}
		r.Kinds[k] = t
	}
	return t
}

// Text is the report in lines, for people.
func (r *Report) Text() string {
	var b strings.Builder
	rate := 0.0
	if r.Elapsed > 0 {
		rate = float64(r.Entries) / r.Elapsed.Seconds()
	}
	fmt.Fprintf(&b, "replayed %d entries (seqs 0 to %d of %d) in %v: %.0f entries/s, %d kernel runs\n",
		r.Entries, r.Last, r.Size, r.Elapsed.Round(time.Millisecond), rate, r.Runs)
	kinds := make([]string, 0, len(r.Kinds))
	for k := range r.Kinds {
		kinds = append(kinds, string(k))
	}
	sort.Strings(kinds)
	fmt.Fprintf(&b, "%-12s %9s %9s %9s %9s\n", "kind", "checked", "input", "opaque", "skipped")
	for _, k := range kinds {
		t := r.Kinds[ledger.Kind(k)]
		fmt.Fprintf(&b, "%-12s %9d %9d %9d %9d\n", k, t.Checked, t.Input, t.Opaque, t.Skipped)
	}
	res := r.Results
	if r.Drivers {
		fmt.Fprintf(&b, "results: %d reproduced by re-running the drivers, %d reproduced with the world's values as inputs, %d hardware failures taken as inputs, %d interrupted\n",
			res.Reproduced, res.World, res.Hardware, res.Interrupted)
	} else {
		b.WriteString("results: drivers not re-run (--drivers none): every result taken as recorded\n")
	}
	for _, line := range sortedCounts(res.Unchecked) {
		fmt.Fprintf(&b, "  unchecked: %s\n", line)
	}
	if len(r.Inputs) > 0 {
		b.WriteString("taken as inputs:\n")
		for _, line := range sortedCounts(r.Inputs) {
			fmt.Fprintf(&b, "  %s\n", line)
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	return b.String()
}

func sortedCounts(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = fmt.Sprintf("%d %s", m[k], k)
	}
	return out
}

// Divergence is the first entry whose recorded content replay did not
// reproduce.
type Divergence struct {
	Seq  uint64      `json:"seq"`
	Kind ledger.Kind `json:"kind"`
	// Entry describes the entry: who did what under which grant.
	Entry string `json:"entry"`
	// What differs: "decision", "reason", "grant", "result", ...
	What     string `json:"what"`
	Recorded string `json:"recorded"`
	Replayed string `json:"replayed"`
	// Hint, when set, suggests a cause other than a forged ledger.
	Hint string `json:"hint,omitempty"`
}

func (d *Divergence) Error() string {
	s := fmt.Sprintf("divergence at seq %d (%s): %s: recorded %s, replay gives %s", d.Seq, d.Entry, d.What, d.Recorded, d.Replayed)
	if d.Hint != "" {
		s += " (" + d.Hint + ")"
	}
	return s
}

// quote renders a recorded or replayed value for a divergence.
func quote(s string) string {
	if s == "" {
		return "nothing"
	}
	return fmt.Sprintf("%q", s)
}
