package replay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/osmose-os/osmose/ledger"
)

// Options configure a replay. The zero value replays decisions only.
type Options struct {
	// Drivers re-runs the drivers of package drivers on the replayed calls
	// and compares their results with the recorded ones (devices.go).
	// Without it every result is an input.
	Drivers bool
	// Location is where the kernel reckoned caveat time windows and the
	// policy's minuteOfDay (kernel.Config.Location); nil means UTC, as
	// the kernel's default.
	Location *time.Location
	// Progress, if set, is called every ProgressEvery entries (default
	// 16384) with the seq reached and the last seq to replay.
	Progress      func(done, last uint64)
	ProgressEvery uint64
	// SlowReader reads entries through Ledger.Read instead of the store
	// (the reference reader; about five times slower).
	SlowReader bool
}

// Replay is a replay under way over one ledger: Open it, Advance it to a
// seq (as often as wanted, forward), read its Report and State, Close it.
// Not safe for concurrent use.
type Replay struct {
	l    *ledger.Ledger
	src  source
	eng  *engine
	opts Options
	size uint64
	next uint64 // the next seq to replay
	last cid.Cid
	took time.Duration
	err  error // the divergence or failure that stopped it
}

// Open prepares a replay of the ledger l, whose store is store (the
// store l was opened on; nil reads through l alone, slowly). It reads
// the redaction entries first: a body they list is erased, and its entry
// is an opaque step.
func Open(ctx context.Context, l *ledger.Ledger, store ledger.Store, opts Options) (*Replay, error) {
	if opts.ProgressEvery == 0 {
		opts.ProgressEvery = 16384
	}
	size, _, last := l.Head()
	red, err := redactions(ctx, l)
	if err != nil {
		return nil, err
	}
	rp := &Replay{l: l, eng: newEngine(opts, red), opts: opts, size: uint64(size), last: last}
	rp.eng.rep.Size = size
	if store == nil || opts.SlowReader {
		rp.src, rp.eng.rep.Reader = apiSource{l}, "ledger"
	} else {
		src, err := newStoreSource(ctx, store, uint64(size))
		if err != nil {
			return nil, err
		}
		rp.src, rp.eng.rep.Reader = src, "store"
	}
	return rp, nil
}

// redactions reads every redaction entry's list of erased bodies.
func redactions(ctx context.Context, l *ledger.Ledger) (map[uint64]map[string]bool, error) {
	var seqs []uint64
	err := l.Lookup(ctx, ledger.ByKind, string(ledger.KindRedaction), 0, uint64(l.Size()), func(s uint64) bool {
		seqs = append(seqs, s)
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("find the redaction entries: %w", err)
	}
	out := map[uint64]map[string]bool{}
	for _, s := range seqs {
		r, err := l.Read(ctx, s)
		if err != nil {
			return nil, fmt.Errorf("read redaction entry %d: %w", s, err)
		}
		var red ledger.Redaction
		if err := json.Unmarshal(r.Params(), &red); err != nil {
			return nil, corrupt(s, "redaction list: %v", err)
		}
		for _, b := range red.Removed {
			c, err := cid.Decode(b.CID)
			if err != nil {
				return nil, corrupt(s, "redaction lists a bad CID %q", b.CID)
			}
			if out[b.Seq] == nil {
				out[b.Seq] = map[string]bool{}
			}
			out[b.Seq][c.KeyString()] = true
		}
	}
	return out, nil
}

// Size returns the ledger's durable size.
func (rp *Replay) Size() uint64 { return rp.size }

// Next returns the seq Advance replays next: one past the last replayed.
func (rp *Replay) Next() uint64 { return rp.next }

// Advance replays the entries up to and including until (at most the
// ledger's last). It stops at the first divergence, a *Divergence, after
// which the replay cannot go on.
func (rp *Replay) Advance(ctx context.Context, until uint64) error {
	if rp.err != nil {
		return rp.err
	}
	if rp.size == 0 {
		return nil
	}
	until = min(until, rp.size-1)
	if rp.next > until {
		return nil
	}
	start := time.Now()
	defer func() { rp.took += time.Since(start) }()
	// One goroutine reads and decodes entries while this one applies
	// them: the two halves of the work, on two cores.
	ch := make(chan batch, 4)
	stop := make(chan struct{})
	go rp.read(ctx, rp.next, until, ch, stop)
	defer func() {
		close(stop)
		for range ch { // let the reader end
		}
	}()
	for b := range ch {
		for _, en := range b.entries {
			seq := rp.next
			if seq%1024 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			if rp.opts.Progress != nil && seq%rp.opts.ProgressEvery == 0 && seq > 0 {
				rp.opts.Progress(seq, until)
			}
			if err := rp.eng.apply(ctx, en); err != nil {
				rp.err = err
				return err
			}
			rp.next++
			if rp.next == rp.size && en.Key != rp.last.KeyString() {
				rp.err = corrupt(seq, "the last entry's CID %s is not the ledger head's %s", en.CID(), rp.last)
				return rp.err
			}
		}
		if b.err != nil {
			if err := rp.eng.settle(); err != nil {
				b.err = err
			}
			rp.err = b.err
			return b.err
		}
	}
	if err := rp.eng.settle(); err != nil {
		rp.err = err
		return err
	}
	return nil
}

// batch is a run of entries the reader decoded, or the error that
// stopped it after them.
type batch struct {
	entries []*Entry
	err     error
}

const batchSize = 256

// read reads the entries from..until in batches into ch, until done or
// stop.
func (rp *Replay) read(ctx context.Context, from, until uint64, ch chan<- batch, stop <-chan struct{}) {
	defer close(ch)
	for seq := from; seq <= until; {
		b := batch{entries: make([]*Entry, 0, min(batchSize, until-seq+1))}
		for len(b.entries) < batchSize && seq <= until {
			en, err := rp.src.next(ctx, seq)
			if err != nil {
				b.err = err
				break
			}
			b.entries = append(b.entries, en)
			seq++
		}
		select {
		case ch <- b:
		case <-stop:
			return
		}
		if b.err != nil {
			return
		}
	}
}

// Report says what the replay checked so far.
func (rp *Replay) Report() Report {
	rep := rp.eng.rep
	rep.Elapsed = rp.took
	if rp.next > 0 {
		rep.Entries, rep.Last = rp.next, rp.next-1
	}
	rep.Notes = rp.eng.notes(rp.next == rp.size)
	return rep
}

// Close releases the replay's drivers and reader.
func (rp *Replay) Close() {
	rp.src.close()
	rp.eng.close()
}

// IsDivergence reports whether err is a divergence (rather than a
// ledger replay could not read).
func IsDivergence(err error) bool {
	var d *Divergence
	return errors.As(err, &d)
}

// WriteProgress returns a Progress function that writes a line to w at
// most once per interval: how far, how fast.
func WriteProgress(w io.Writer, every time.Duration) func(done, last uint64) {
	start := time.Now()
	next := start.Add(every)
	return func(done, last uint64) {
		now := time.Now()
		if now.Before(next) {
			return
		}
		next = now.Add(every)
		rate := float64(done) / now.Sub(start).Seconds()
		fmt.Fprintf(w, "replay: seq %d of %d (%.0f%%), %.0f entries/s\n", done, last, 100*float64(done)/float64(max(last, 1)), rate)
	}
}
