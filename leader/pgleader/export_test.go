package pgleader

// SetBeforeRenew makes the PostgreSQL locker l run f before each renewal of
// its leases; set it before the first Acquire.
func SetBeforeRenew(l *Locker, f func()) { l.beforeRenew = f }
