package pgverify

// SetChunks makes every Verify read with at most readers goroutines in
// chunks of chunk positions, so that a small log crosses many chunks,
// until the returned function restores the defaults.
func SetChunks(readers int, chunk int64) (restore func()) {
	oldReaders, oldChunk := readersFor, chunkPositions
	readersFor, chunkPositions = func() int { return readers }, chunk
	return func() { readersFor, chunkPositions = oldReaders, oldChunk }
}
