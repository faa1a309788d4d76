package kernel

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/osmose-os/osmose/caps"
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
