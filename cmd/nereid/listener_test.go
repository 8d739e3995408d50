package main

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// scriptedListener returns the errors of its script, then accepts from
// the inner listener it wraps.
type scriptedListener struct {
	net.Listener
	errs []error
}

func (l *scriptedListener) Accept() (net.Conn, error) {
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		return nil, err
	}
	return l.Listener.Accept()
}

func loopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

func dial(t *testing.T, ln net.Listener) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Running out of descriptors is waited out, not the end of the listener.
func TestGuardedListenerRetriesTransientErrors(t *testing.T) {
	inner := loopback(t)
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	g := guardListener(&scriptedListener{Listener: inner, errs: []error{emfile, emfile, syscall.ECONNABORTED}}, "test", 0, zerolog.Nop())
	var slept []time.Duration
	g.sleep = func(d time.Duration) { slept = append(slept, d) }
	dial(t, inner)
	c, err := g.Accept()
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	_ = c.Close()
	if len(slept) != 3 || slept[0] != 5*time.Millisecond || slept[1] != 10*time.Millisecond {
		t.Errorf("backoff %v", slept)
	}
	// Any other error ends the listener as before.
	g2 := guardListener(&scriptedListener{Listener: inner, errs: []error{errors.New("broken")}}, "test", 0, zerolog.Nop())
	if _, err := g2.Accept(); err == nil {
		t.Error("a permanent error was retried")
	}
}

// At the cap, Accept waits until a connection closes; Close wakes it.
func TestGuardedListenerCapsConnections(t *testing.T) {
	inner := loopback(t)
	g := guardListener(inner, "test", 1, zerolog.Nop())
	for range 3 {
		dial(t, inner)
	}
	first, err := g.Accept()
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		c, err := g.Accept()
		if err == nil {
			_ = c.Close()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("a second connection was accepted over the cap (err %v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	_ = first.Close() // frees the slot
	if err := <-got; err != nil {
		t.Fatalf("after a close: %v", err)
	}
	// A waiting Accept returns once the listener closes.
	blocker, err := g.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Close()
	go func() { _, err := g.Accept(); got <- err }()
	_ = g.Close()
	if err := <-got; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
}
