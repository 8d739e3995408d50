package main

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

// guardedListener is what every listener of Nereid's serves through: it
// keeps at most max connections open (0: no cap) — the next Accept waits,
// and the connection stays in the kernel's backlog without a descriptor of
// ours, until one closes — and it rides out transient accept errors (out of
// descriptors, a connection aborted before it was accepted) with a backoff,
// as Go's net/http does, instead of returning them: a front end treats an
// error from Accept as the end of its listener, which used to shut the whole
// server down once a flood of connections exhausted the descriptors.
type guardedListener struct {
	net.Listener
	name  string
	log   zerolog.Logger
	slots chan struct{} // one token per open connection; nil: no cap
	sleep func(time.Duration)

	closeOnce sync.Once
	closed    chan struct{}
}

func guardListener(ln net.Listener, name string, maxConns int, log zerolog.Logger) *guardedListener {
	g := &guardedListener{Listener: ln, name: name, log: log, sleep: time.Sleep, closed: make(chan struct{})}
	if maxConns > 0 {
		g.slots = make(chan struct{}, maxConns)
	}
	return g
}

// Accept waits for a free connection slot, then for a connection.
func (g *guardedListener) Accept() (net.Conn, error) {
	if g.slots != nil {
		select {
		case g.slots <- struct{}{}:
		case <-g.closed:
			return nil, net.ErrClosed
		}
	}
	var delay time.Duration
	for {
		c, err := g.Listener.Accept()
		if err == nil {
			if g.slots == nil {
				return c, nil
			}
			return &slotConn{Conn: c, release: func() { <-g.slots }}, nil
		}
		if !transientAcceptError(err) {
			if g.slots != nil {
				<-g.slots
			}
			return nil, err
		}
		if delay == 0 {
			delay = 5 * time.Millisecond
			g.log.Warn().Err(err).Str("listener", g.name).Msg("accept failed; retrying with backoff (raise the descriptor limit or lower the connection cap)")
		} else {
			delay = min(2*delay, time.Second)
		}
		g.sleep(delay)
	}
}

// Close closes the listener and wakes an Accept that waits for a slot.
func (g *guardedListener) Close() error {
	g.closeOnce.Do(func() { close(g.closed) })
	return g.Listener.Close()
}

// transientAcceptError reports whether an accept error passes: the process
// or the system is out of descriptors or buffers for now, or the client
// gave up before its connection was accepted.
func transientAcceptError(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ECONNABORTED, syscall.ENOBUFS, syscall.ENOMEM, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// slotConn gives its listener slot back when it is closed, once.
type slotConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *slotConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// SyscallConn exposes the accepted connection's descriptor, as the
// *net.TCPConn it wraps does.
func (c *slotConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
}
