//go:build linux || darwin

package httpfront

import (
	"errors"
	"syscall"
)

// watchable reports whether the connection is a socket that awaitInput
// can peek at.
func (c *lingerConn) watchable() bool {
	_, ok := c.Conn.(syscall.Conn)
	return ok
}

// awaitInput waits until the socket has something to read and reports
// what, consuming nothing: the runtime's poller does the waiting, and a
// MSG_PEEK receive of one byte tells an end of stream or a reset (the
// client is gone) from data (its next request). It returns
// watchInterrupted when interruptWatch woke it or the connection closed.
func (c *lingerConn) awaitInput() watchEvent {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return watchInterrupted
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return watchInterrupted
	}
	out := watchInterrupted
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		for {
			n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			switch {
			case errors.Is(err, syscall.EINTR):
				continue
			case errors.Is(err, syscall.EAGAIN):
				return false // wait until readable
			case err != nil || n == 0:
				out = watchPeerGone
			default:
				out = watchPipelined
			}
			return true
		}
	})
	if err != nil {
		return watchInterrupted
	}
	return out
}
