package payload

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/nereid-project/nereid/inference"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestBudgetAcquireRelease(t *testing.T) {
	b := NewBudget(100, nil)
	if err := b.Acquire(60); err != nil {
		t.Fatal(err)
	}
	if !b.Fits(40) || b.Fits(41) || b.Full() {
		t.Fatalf("after 60 of 100: Fits(40)=%v Fits(41)=%v Full=%v", b.Fits(40), b.Fits(41), b.Full())
	}
	err := b.Acquire(41)
	var ie *inference.Error
	if !errors.As(err, &ie) || ie.Code != inference.CodeUnavailable {
		t.Fatalf("Acquire over the budget: %v, want Unavailable", err)
	}
	if !strings.Contains(err.Error(), "--payload-budget-bytes") || !strings.Contains(err.Error(), "60 of 100") {
		t.Errorf("refusal %q does not name the flag and the use", err)
	}
	if b.InUse() != 60 {
		t.Fatalf("a refused Acquire took bytes: in use %d", b.InUse())
	}
	if err := b.Acquire(40); err != nil {
		t.Fatal(err)
	}
	if !b.Full() {
		t.Error("100 of 100 is not Full")
	}
	b.Release(60)
	b.Release(40)
	if b.InUse() != 0 {
		t.Fatalf("in use %d after releasing all", b.InUse())
	}
	if err := b.Acquire(101); err == nil || !strings.Contains(err.Error(), "exceeds the server's payload budget of 100") {
		t.Errorf("a payload larger than the budget: %v", err)
	}
}

func TestBudgetWithoutCap(t *testing.T) {
	for _, b := range []*Budget{nil, NewBudget(0, nil)} {
		if err := b.Acquire(1 << 40); err != nil {
			t.Fatal(err)
		}
		if b.Full() || !b.Fits(1<<50) || b.Limit() != 0 {
			t.Errorf("%v: an uncapped budget refuses", b)
		}
		b.Release(1 << 40)
	}
}

func TestBudgetConcurrentNeverOverCommits(t *testing.T) {
	b := NewBudget(1000, nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	peak := int64(0)
	for range 8 {
		wg.Go(func() {
			for range 2000 {
				if b.Acquire(300) != nil {
					continue
				}
				mu.Lock()
				peak = max(peak, b.InUse())
				mu.Unlock()
				b.Release(300)
			}
		})
	}
	wg.Wait()
	if peak > 1000 || b.InUse() != 0 {
		t.Fatalf("peak %d over the limit, or %d left in use", peak, b.InUse())
	}
}

func TestAllocLargeIsMappedAndFreed(t *testing.T) {
	b := Alloc(LargeSize)
	if len(b) != LargeSize || cap(b) != LargeSize {
		t.Fatalf("len %d cap %d", len(b), cap(b))
	}
	for i := 0; i < len(b); i += 4096 {
		if b[i] != 0 {
			t.Fatal("mapped memory is not zero")
		}
		b[i] = 1
	}
	Free(b)
	Free(b) // a second Free unmaps nothing (and must not crash)
	small := Alloc(10)
	small[9] = 1
	Free(small)
}

func TestReleaserWaitsForQuiet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := NewReleaser()
		r.After = [3]time.Duration{time.Second, 5 * time.Second, 10 * time.Second}
		var mu sync.Mutex
		var got []time.Duration
		start := time.Now()
		r.release = func() {
			mu.Lock()
			got = append(got, time.Since(start))
			mu.Unlock()
		}
		calls := func() []time.Duration {
			synctest.Wait()
			mu.Lock()
			defer mu.Unlock()
			return append([]time.Duration(nil), got...)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { r.Run(ctx); close(done) }()

		// Notes every 500 ms for 2 s, then silence: releases 1, 5 and 10 s
		// after the last note.
		for range 5 {
			r.Note()
			time.Sleep(500 * time.Millisecond)
		}
		time.Sleep(30 * time.Second)
		want := []time.Duration{3 * time.Second, 7 * time.Second, 12 * time.Second}
		if c := calls(); !slices.Equal(c, want) {
			t.Fatalf("releases at %v, want %v", c, want)
		}
		// A note in the middle of a schedule starts it again.
		b := NewBudget(0, r)
		_ = b.Acquire(LargeSize - 1)
		b.Release(LargeSize - 1) // small: not noted
		time.Sleep(30 * time.Second)
		if c := calls(); len(c) != 3 {
			t.Fatalf("a small release was noted: %v", c)
		}
		mu.Lock()
		start, got = time.Now(), nil
		mu.Unlock()
		_ = b.Acquire(LargeSize)
		b.Release(LargeSize)
		time.Sleep(3 * time.Second)
		b.Discarded(LargeSize)
		time.Sleep(20 * time.Second)
		want = []time.Duration{time.Second, 4 * time.Second, 8 * time.Second, 13 * time.Second}
		if c := calls(); !slices.Equal(c, want) {
			t.Fatalf("releases at %v, want %v", c, want)
		}
		cancel()
		<-done
	})
}

// What OnRelease adds runs with every release, before it.
func TestReleaserOnRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := NewReleaser()
		r.After = [3]time.Duration{time.Second, 2 * time.Second, 3 * time.Second}
		var order []string
		r.release = func() { order = append(order, "heap") }
		b := NewBudget(0, r)
		b.OnRelease(func() { order = append(order, "pool") })
		var none *Budget
		none.OnRelease(func() { t.Error("a nil budget ran its function") })
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { r.Run(ctx); close(done) }()
		b.Discarded(LargeSize)
		time.Sleep(5 * time.Second)
		synctest.Wait()
		cancel()
		<-done
		if want := []string{"pool", "heap", "pool", "heap", "pool", "heap"}; !slices.Equal(order, want) {
			t.Fatalf("order %v, want %v", order, want)
		}
	})
}
