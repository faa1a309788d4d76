package ledger

// SettleLog settles a store's write-ahead log, as an erasure does.
func SettleLog(s *BadgerStore) error { return s.settleLog() }
