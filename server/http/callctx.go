package httpfront

import (
	"context"
	"sync"
	"time"
)

// callContext is the cancellable context of the request an inferCall
// serves, kept with the call object from one request to the next so that
// the /infer fast path allocates no context of its own (context.WithCancel
// costs an allocation for the context, one for its cancel function, one for
// its Done channel and one for the set of its children, on every request).
//
// It implements the AfterFunc method that the context package looks for, so
// contexts derived from it (context.AfterFunc, WithCancel) register with it
// directly instead of starting a goroutine to watch it. Values come from
// parent; there is no deadline. Cancel closes Done, sets Err to
// context.Canceled and runs the registered functions, each on its own
// goroutine, as context.AfterFunc does.
type callContext struct {
	parent context.Context //nolint:containedctx // the source of Value, fixed for the call's life

	mu     sync.Mutex // guards the fields below
	done   chan struct{}
	err    error
	afters []afterEntry
	nextID uint64
}

type afterEntry struct {
	id uint64
	f  func()
}

var _ context.Context = (*callContext)(nil)

func newCallContext(parent context.Context) *callContext {
	return &callContext{parent: parent, done: make(chan struct{})}
}

func (c *callContext) Deadline() (time.Time, bool) { return time.Time{}, false }

func (c *callContext) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.done
}

func (c *callContext) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *callContext) Value(key any) any { return c.parent.Value(key) }

// AfterFunc arranges for f to run, on its own goroutine, once c is
// cancelled; stop unregisters it and reports whether it did so before f
// was started.
func (c *callContext) AfterFunc(f func()) (stop func() bool) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	c.nextID++
	id := c.nextID
	c.afters = append(c.afters, afterEntry{id, f})
	c.mu.Unlock()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, a := range c.afters {
			if a.id == id {
				c.afters = append(c.afters[:i], c.afters[i+1:]...)
				return true
			}
		}
		return false
	}
}

// cancel ends the request's context. It is the context.CancelFunc the
// disconnect watch calls; a second call does nothing.
func (c *callContext) cancel() {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = context.Canceled
	close(c.done)
	fs := c.afters
	c.afters = nil
	c.mu.Unlock()
	for _, a := range fs {
		go a.f()
	}
}

// reset makes c ready for the call's next request: a fresh Done channel
// if the last one was closed, no registered functions. Registrations left
// by the last request are dropped (their stop reports false).
func (c *callContext) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		c.done = make(chan struct{})
		c.err = nil
	}
	clear(c.afters)
	c.afters = c.afters[:0]
}
