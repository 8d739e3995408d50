//go:build !linux && !darwin

package httpfront

// watchable is false where the socket cannot be peeked at: requests are
// then cancelled only with the base context.
func (c *lingerConn) watchable() bool { return false }

func (c *lingerConn) awaitInput() watchEvent { return watchInterrupted }
