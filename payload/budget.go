package payload

import (
	"sync/atomic"

	"github.com/nereid-project/nereid/inference"
)

// Budget caps the bytes of request payload held at once. The zero value and
// a nil *Budget have no cap. Methods are safe for concurrent use.
type Budget struct {
	limit int64
	used  atomic.Int64
	// rel, when set, is told about every release of LargeSize or more.
	rel *Releaser
}

// NewBudget returns a budget of limit bytes (no cap when limit <= 0) that
// tells rel (which may be nil) when large payloads are released.
func NewBudget(limit int64, rel *Releaser) *Budget {
	return &Budget{limit: limit, rel: rel}
}

// Limit is the cap in bytes, 0 when there is none.
func (b *Budget) Limit() int64 {
	if b == nil || b.limit <= 0 {
		return 0
	}
	return b.limit
}

// InUse is the number of bytes acquired and not yet released.
func (b *Budget) InUse() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

// Full reports whether nothing more fits: new large requests are refused
// before they are read.
func (b *Budget) Full() bool {
	return b.Limit() > 0 && b.used.Load() >= b.limit
}

// Fits reports whether n more bytes fit now; it reserves nothing.
func (b *Budget) Fits(n int64) bool {
	return b.Limit() == 0 || b.used.Load()+n <= b.limit
}

// Acquire takes n bytes of the budget. It fails, taking nothing, with an
// Unavailable error naming the budget when they do not fit; a payload larger
// than the whole budget always fails. Every successful Acquire is paired
// with one Release(n).
func (b *Budget) Acquire(n int64) error {
	if b == nil || n <= 0 {
		return nil
	}
	if b.limit <= 0 {
		b.used.Add(n)
		return nil
	}
	for {
		used := b.used.Load()
		if used+n > b.limit {
			return b.refusal(n, used)
		}
		if b.used.CompareAndSwap(used, used+n) {
			return nil
		}
	}
}

// Release gives back n bytes taken by Acquire.
func (b *Budget) Release(n int64) {
	if b == nil || n <= 0 {
		return
	}
	b.used.Add(-n)
	if n >= LargeSize {
		b.rel.Note()
	}
}

// OnRelease adds f to what the budget's Releaser does when it returns the
// memory of large payloads (Releaser.OnRelease); without one, f never runs.
func (b *Budget) OnRelease(f func()) {
	if b != nil {
		b.rel.OnRelease(f)
	}
}

// Discarded tells the budget that n bytes of payload memory it never
// counted (a body refused while it was being read) are garbage now, so that
// a large amount goes back to the OS as a released payload's would.
func (b *Budget) Discarded(n int64) {
	if b != nil && n >= LargeSize {
		b.rel.Note()
	}
}

// Refusal is the error for a request of n bytes that does not fit now; n 0
// means a request of unknown size refused because the budget is Full.
func (b *Budget) Refusal(n int64) error { return b.refusal(n, b.InUse()) }

func (b *Budget) refusal(n, used int64) error {
	if n == 0 {
		return inference.Unavailable("the server's payload budget is full: %d of %d bytes in use (--payload-budget-bytes); retry later", used, b.limit)
	}
	if n > b.limit {
		return inference.Unavailable("request payload of %d bytes exceeds the server's payload budget of %d bytes (--payload-budget-bytes)", n, b.limit)
	}
	return inference.Unavailable("request payload of %d bytes does not fit in the server's payload budget: %d of %d bytes in use (--payload-budget-bytes); retry later", n, used, b.limit)
}
