package sqlitestore

// ReadAccountSQL is the statement of ReadAccount, for the test of its plan.
const ReadAccountSQL = readAccountSQL

// Batched returns how many appends s wrote in a batch with others, and how
// many of those failed while the others committed.
func (s *Store) Batched() (batched, failed int64) { return s.batched.Load(), s.failedInBatch.Load() }
