package groupcommit

// Queued returns how many items wait for a batch.
func (q *Queue[T]) Queued() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.queue)
}

// Writing reports whether a batch is being written.
func (q *Queue[T]) Writing() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.writing > 0
}
