package ledger

import (
	"context"
	"testing"
)

// TestPendingDone: Done of an entry asked for before it is durable closes
// when it is, and Done asked for only after is closed already, with Err
// the outcome in both cases.
func TestPendingDone(t *testing.T) {
	ctx := context.Background()
	l, err := Open(ctx, NewMemStore(), Options{Key: testKey(1)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	early, err := l.Append(ctx, benchEntry(0))
	if err != nil {
		t.Fatal(err)
	}
	asked := early.Done()
	late, err := l.Append(ctx, benchEntry(1))
	if err != nil {
		t.Fatal(err)
	}
	<-asked
	if err := early.Err(); err != nil {
		t.Fatal(err)
	}
	// Entries are settled in seq order: once last is, late is too,
	// before anyone asked for its Done.
	last, err := l.Append(ctx, benchEntry(2))
	if err != nil {
		t.Fatal(err)
	}
	if err := last.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-late.Done():
	default:
		t.Fatal("Done of a durable entry is not closed")
	}
	if err := late.Err(); err != nil {
		t.Fatal(err)
	}
}
