package relay

// SetBeforeCheckpoint makes the relay call f after JetStream acknowledged
// events and before the checkpoint moves past them, the point where a
// crash leaves events published but not recorded. Call it before Run.
func (r *Relay) SetBeforeCheckpoint(f func()) { r.beforeCheckpoint = func(int64) { f() } }

// SetCheckpointHook makes the relay call f with the position it is about
// to move its checkpoint to, at the same point as SetBeforeCheckpoint.
func (r *Relay) SetCheckpointHook(f func(to int64)) { r.beforeCheckpoint = f }

// SetBeforePurge makes the relay call f after JetStream stored an erasure
// and before the relay purges its session's earlier messages.
func (r *Relay) SetBeforePurge(f func()) { r.beforePurge = f }
