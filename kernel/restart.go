package kernel

import (
	"context"
	"fmt"
	"strconv"

	"github.com/osmose-os/osmose/caps"
	"github.com/osmose-os/osmose/ledger"
)

// firstGrant returns the id the kernel's first grant takes on this ledger:
// one more than the highest grant id any entry names, so that an id never
// names two grants across restarts. Grants of an earlier run are not live
// in this one (their holders open again); the ledger keeps their history.
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
