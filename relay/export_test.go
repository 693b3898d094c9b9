package relay

// SetBeforeCheckpoint makes the relay call f after JetStream acknowledged a
// batch and before the checkpoint moves past it, the point where a crash
// leaves events published but not recorded. Call it before Run.
func (r *Relay) SetBeforeCheckpoint(f func()) { r.beforeCheckpoint = f }

func (r *Relay) SetBeforePurge(f func()) { r.beforePurge = f }
