package kernel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"github.com/osmose-os/osmose/caps"
	"github.com/osmose-os/osmose/internal/topology"
	"github.com/osmose-os/osmose/ledger"
)

// firstGrant returns the id the kernel's first grant takes on this ledger:
// one more than the highest grant id any entry names, so that an id never
// names two grants across restarts. Grants of an earlier run are not live
// in this one (their holders open again): the kernel's "start" entry
// (recordStart) ends them on the ledger.
func firstGrant(ctx context.Context, l *ledger.Ledger) (caps.GrantID, error) {
	ids, err := l.IndexValues(ctx, ledger.ByGrant)
	if err != nil {
		return 0, fmt.Errorf("read the ledger's grant ids: %w", err)
	}
	var top uint64
	for v := range ids {
		id, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%w: grant index value %q", ledger.ErrCorrupt, v)
		}
		top = max(top, id)
	}
	return caps.GrantID(top + 1), nil
}

// recordStart appends the kernel's "start" entry and waits until it is
// durable: it marks where this run begins and ends every grant of earlier
// runs (those below first), so that the ledger, read alone, says no grant
// of an earlier run is live.
func recordStart(ctx context.Context, l *ledger.Ledger, first caps.GrantID, now time.Time) error {
	reason := "kernel started"
	if first > 1 {
		reason = fmt.Sprintf("kernel started: grants g1 to g%d of earlier runs ended", first-1)
	}
	_, _, err := l.Commit(ctx, ledger.Entry{Kind: ledger.KindStart, Actor: "kernel", Reason: reason, Time: now.UnixNano()})
	if err != nil {
		return fmt.Errorf("record start: %w", err)
	}
	return nil
}

// KindTopology is the kind of the entries that hold the building's
// topology as the kernel started with it: the YAML of topology.Write, in
// parts of at most topologyPart bytes (result bodies), each entry's Reason
// "topology part I/N, sha256 H" with H the hash of the whole file. They
// follow the "start" entry, so the ledger alone says which building every
// later decision was made in (replay, audits).
const KindTopology ledger.Kind = "topology"

const topologyPart = 512 << 10

// recordTopology appends the topology entries and waits until they are
// durable.
func recordTopology(ctx context.Context, l *ledger.Ledger, top *topology.Topology, now int64) error {
	var b bytes.Buffer
	if err := top.Write(&b); err != nil {
		return fmt.Errorf("record topology: %w", err)
	}
	data := b.Bytes()
	sum := sha256.Sum256(data)
	n := max(1, (len(data)+topologyPart-1)/topologyPart)
	var last *ledger.Pending
	for i := range n {
		part := data[i*topologyPart : min(len(data), (i+1)*topologyPart)]
		p, err := l.Append(ctx, ledger.Entry{
			Kind: KindTopology, Actor: "kernel", Time: now, Result: part,
			Reason: fmt.Sprintf("topology part %d/%d, sha256 %x", i+1, n, sum),
		})
		if err != nil {
			return fmt.Errorf("record topology: %w", err)
		}
		last = p
	}
	if err := last.Wait(ctx); err != nil {
		return fmt.Errorf("record topology: %w", err)
	}
	return nil
}

// ParseTopologyPart reads the Reason of a topology entry: its part number
// (from 1), the number of parts, and the hash of the whole file.
func ParseTopologyPart(reason string) (part, of int, sum [32]byte, err error) {
	var h string
	if _, err = fmt.Sscanf(reason, "topology part %d/%d, sha256 %s", &part, &of, &h); err != nil {
		return 0, 0, sum, fmt.Errorf("topology entry reason %q: %w", reason, err)
	}
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != len(sum) || part < 1 || part > of {
		return 0, 0, sum, fmt.Errorf("topology entry reason %q: malformed", reason)
	}
	copy(sum[:], b)
	return part, of, sum, nil
}
