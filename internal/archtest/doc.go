// Package archtest holds the project's architecture tests: every package has a
// package doc comment, and imports point toward the leaves as DESIGN.md lays
// out (schema and ledger import nothing of ours; caps may import schema;
// drivers import schema only; kernel imports schema, caps and ledger; sim and
// shell talk to the kernel only over Cap'n Proto; nothing imports cmd).
//
// It has no code of its own beyond the tests; `go test ./internal/archtest`
// runs them.
package archtest
