package httpfront

import (
	"context"
	"errors"
	"testing"
	"time"
)

type ctxKey struct{}

func TestCallContext(t *testing.T) {
	parent := context.WithValue(context.Background(), ctxKey{}, "v")
	c := newCallContext(parent)
	if c.Value(ctxKey{}) != "v" || c.Err() != nil {
		t.Fatalf("fresh context: value %v, err %v", c.Value(ctxKey{}), c.Err())
	}
	// A derived context and an AfterFunc follow a cancel.
	child, stopChild := context.WithCancel(c)
	defer stopChild()
	ran := make(chan struct{})
	context.AfterFunc(c, func() { close(ran) })
	stopped := context.AfterFunc(c, func() { t.Error("a stopped function ran") })
	if !stopped() {
		t.Fatal("stop before cancel reports false")
	}
	c.cancel()
	c.cancel() // a second cancel does nothing
	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		t.Fatal("AfterFunc did not run")
	}
	<-child.Done()
	if !errors.Is(child.Err(), context.Canceled) || !errors.Is(c.Err(), context.Canceled) {
		t.Fatalf("errs %v %v", child.Err(), c.Err())
	}
	// Registering after the cancel runs at once.
	late := make(chan struct{})
	if stop := c.AfterFunc(func() { close(late) }); stop() {
		t.Error("stop after cancel reports true")
	}
	<-late
	// reset: a new request gets an open context, and leftovers are gone.
	c.reset()
	leftover := c.AfterFunc(func() { t.Error("a leftover of the last request ran") })
	c.reset()
	if c.Err() != nil {
		t.Fatal("reset context is cancelled")
	}
	select {
	case <-c.Done():
		t.Fatal("reset context is done")
	default:
	}
	if leftover() {
		t.Error("a leftover's stop reports true after reset")
	}
	c.cancel()
	<-c.Done()
}
