package payload

import (
	"context"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"time"
)

// Releaser hands memory that large payloads left on the Go heap back to the
// OS. The runtime would collect it only when the heap next grows past its
// goal (which a large payload has just raised) or every two minutes, and
// returns freed pages gradually; so after a burst the process would keep
// its peak for minutes. A Releaser, told of each large release, waits until
// none has come for a quiet spell, then collects twice (sync.Pool keeps what
// it holds through one collection, and front ends pool their receive
// buffers) and returns the free pages at once. It does so again twice
// later, since some of that memory is only dropped once a slow client has
// read its response: at After[0], After[1] and After[2] after the last note.
//
// The work is one goroutine, Run's; Note never blocks.
type Releaser struct {
	// After are the times, counted from the last Note, at which memory is
	// returned; the zero value means 2 s, 15 s and 45 s.
	After [3]time.Duration
	// release returns the memory; nil means collect and scavenge.
	release func()
	notes   chan struct{}

	mu sync.Mutex
	// also is what OnRelease added, run before each release.
	also []func()
}

// OnRelease adds f to what each release does, before the heap is returned:
// a pool outside the Go heap trims what it keeps. f runs on Run's
// goroutine. A nil Releaser ignores it.
func (r *Releaser) OnRelease(f func()) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.also = append(r.also, f)
	r.mu.Unlock()
}

// releaseAll runs the OnRelease functions, then release.
func (r *Releaser) releaseAll(release func()) {
	r.mu.Lock()
	also := slices.Clone(r.also)
	r.mu.Unlock()
	for _, f := range also {
		f()
	}
	release()
}

// NewReleaser returns a Releaser; call Run to start it.
func NewReleaser() *Releaser {
	return &Releaser{notes: make(chan struct{}, 1)}
}

// Note records that a large payload was released. A nil Releaser ignores it.
func (r *Releaser) Note() {
	if r == nil {
		return
	}
	select {
	case r.notes <- struct{}{}:
	default: // one already pending
	}
}

// Run returns memory on the schedule of After after each Note, until ctx is
// done.
func (r *Releaser) Run(ctx context.Context) {
	after := r.After
	if after == [3]time.Duration{} {
		after = [3]time.Duration{2 * time.Second, 15 * time.Second, 45 * time.Second}
	}
	release := r.release
	if release == nil {
		release = func() {
			runtime.GC()
			debug.FreeOSMemory()
		}
	}
	timer := time.NewTimer(0)
	timer.Stop()
	next := len(after) // index in after of the next release; none pending
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-r.notes:
			last, next = time.Now(), 0
			timer.Reset(after[0])
		case <-timer.C:
			if next == len(after) {
				continue
			}
			r.releaseAll(release)
			if next++; next < len(after) {
				timer.Reset(time.Until(last.Add(after[next])))
			}
		}
	}
}
