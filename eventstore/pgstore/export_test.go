package pgstore

// ReadAccountSQL is the statement of ReadAccount, for the test of its plan.
const ReadAccountSQL = readAccountSQL

// Batched returns how many appends s wrote in a batch with others, and how
// many a batch left to be written alone.
func (s *Store) Batched() (batched, leftOut int64) { return s.batched.Load(), s.leftOut.Load() }
