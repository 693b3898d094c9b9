package pgaudit

// SetDuringSeal makes s run f inside each Seal's transaction, before the
// commit.
func SetDuringSeal(s *Store, f func()) { s.duringSeal = f }
