package ratelimit

import (
	"context"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParse(t *testing.T) {
	if m, err := ParseMode("execution_count"); err != nil || m != ExecutionCount {
		t.Fatalf("ParseMode = %v, %v", m, err)
	}
	if _, err := ParseMode("on"); err == nil {
		t.Fatal("ParseMode(on) succeeded")
	}
	r, err := ParseResource("R1:4:1")
	if err != nil || r != (Resource{Name: "R1", Count: 4, Device: 1}) {
		t.Fatalf("ParseResource = %+v, %v", r, err)
	}
	r, err = ParseResource("R1:4")
	if err != nil || r.Device != AnyDevice {
		t.Fatalf("ParseResource = %+v, %v", r, err)
	}
	for _, bad := range []string{"R1", "R1:x", ":4", "R1:4:x", "R1:4:1:2", "R1:-1"} {
		if _, err := ParseResource(bad); err == nil {
			t.Errorf("ParseResource(%q) succeeded", bad)
		}
	}
}

func TestOffRegistersNothing(t *testing.T) {
	l := New(Options{Mode: Off})
	g, err := l.Register([]InstanceConfig{{Needs: []Need{{Name: "R", Count: 1}}}})
	if err != nil || g != nil {
		t.Fatalf("Register = %v, %v; want nil, nil", g, err)
	}
}

func TestExplicitCountTooSmall(t *testing.T) {
	l := New(Options{Mode: ExecutionCount, Resources: []Resource{{Name: "resource1", Count: 1, Device: AnyDevice}}})
	_, err := l.Register([]InstanceConfig{{Name: "m_0", Needs: []Need{{Name: "resource1", Count: 4}}}})
	want := `Resource count for "resource1" is limited to 1 which will prevent scheduling of one or more model instances, the minimum required count is 4`
	if err == nil || err.Error() != want {
		t.Fatalf("Register error = %v, want %q", err, want)
	}
	// The failed registration left nothing behind.
	if _, err := l.Register([]InstanceConfig{{Name: "n_0", Needs: []Need{{Name: "resource1", Count: 1}}}}); err != nil {
		t.Fatal(err)
	}
}

func TestDefaultLimitIsLargestNeed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := New(Options{Mode: ExecutionCount})
		a, err := l.Register([]InstanceConfig{{Name: "a", Needs: []Need{{Name: "R", Count: 2}}}})
		if err != nil {
			t.Fatal(err)
		}
		b, err := l.Register([]InstanceConfig{{Name: "b", Needs: []Need{{Name: "R", Count: 1}}}})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		// R has 2 copies: a alone, or b twice... b holds one, a must wait.
		if err := b.Acquire(ctx, 0); err != nil {
			t.Fatal(err)
		}
		got := make(chan struct{})
		go func() {
			_ = a.Acquire(ctx, 0)
			close(got)
		}()
		synctest.Wait()
		select {
		case <-got:
			t.Fatal("a ran while b held one of the two copies it needs")
		default:
		}
		b.Release(0)
		<-got
		a.Release(0)
		l.Unregister(a)
		l.Unregister(b)
	})
}

func TestGlobalResourceSharedAcrossDevices(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := New(Options{Mode: ExecutionCount})
		g, err := l.Register([]InstanceConfig{
			{Name: "gpu0", Device: 0, Needs: []Need{{Name: "G", Global: true, Count: 1}}},
			{Name: "gpu1", Device: 1, Needs: []Need{{Name: "G", Global: true, Count: 1}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if err := g.Acquire(ctx, 0); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			_ = g.Acquire(ctx, 1)
			close(done)
		}()
		synctest.Wait()
		select {
		case <-done:
			t.Fatal("a global resource was taken on two devices at once")
		default:
		}
		g.Release(0)
		<-done
		g.Release(1)
	})
}

func TestPerDeviceResourcesAreSeparate(t *testing.T) {
	l := New(Options{Mode: ExecutionCount, Resources: []Resource{{Name: "R", Count: 1, Device: AnyDevice}}})
	g, err := l.Register([]InstanceConfig{
		{Name: "gpu0", Device: 0, Needs: []Need{{Name: "R", Count: 1}}},
		{Name: "gpu1", Device: 1, Needs: []Need{{Name: "R", Count: 1}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := g.Acquire(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := g.Acquire(ctx, 1); err != nil {
		t.Fatalf("device 1 has its own copy of R: %v", err)
	}
	g.Release(0)
	g.Release(1)
}

// TestPriorityWeighsExecutions: among waiting instances the one with the
// fewest executions times its priority goes first, so an instance of
// priority 2 is served as if it had run twice as often.
func TestPriorityWeighsExecutions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := New(Options{Mode: ExecutionCount})
		g, err := l.Register([]InstanceConfig{
			{Name: "blocker", Needs: []Need{{Name: "R", Count: 1}}},
			{Name: "p1", Priority: 1, Needs: []Need{{Name: "R", Count: 1}}},
			{Name: "p2", Priority: 2, Needs: []Need{{Name: "R", Count: 1}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		run := func(i, times int) {
			for range times {
				if err := g.Acquire(ctx, i); err != nil {
					t.Fatal(err)
				}
				g.Release(i)
			}
		}
		// race makes p1 and p2 wait behind the blocker and returns who
		// got the resource first.
		race := func() int {
			if err := g.Acquire(ctx, 0); err != nil {
				t.Fatal(err)
			}
			first := make(chan int, 2)
			var wg sync.WaitGroup
			for _, i := range []int{1, 2} {
				wg.Go(func() {
					_ = g.Acquire(ctx, i)
					first <- i
					g.Release(i)
				})
			}
			synctest.Wait()
			g.Release(0)
			wg.Wait()
			return <-first
		}
		run(1, 3) // p1 weighs 3*1, p2 0*2
		if got := race(); got != 2 {
			t.Fatalf("first = p%d, want p2 (weight 0 against 3)", got)
		}
		// Now p1 has 4 executions (4), p2 1 (2): p2 again.
		if got := race(); got != 2 {
			t.Fatalf("first = p%d, want p2 (weight 2 against 4)", got)
		}
		// p1 5 (5), p2 2 (4): p2; then p1 6 (6), p2 3 (6): tie, arrival order.
		if got := race(); got != 2 {
			t.Fatalf("first = p%d, want p2 (weight 4 against 5)", got)
		}
		run(2, 1) // p2 4 (8) against p1 6
		if got := race(); got != 1 {
			t.Fatalf("first = p%d, want p1 (weight 6 against 8)", got)
		}
	})
}

func TestAcquireCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := New(Options{Mode: ExecutionCount})
		g, err := l.Register([]InstanceConfig{{Name: "a", Needs: []Need{{Name: "R", Count: 1}}}, {Name: "b", Needs: []Need{{Name: "R", Count: 1}}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Acquire(context.Background(), 0); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		if err := g.Acquire(ctx, 1); err == nil || !strings.Contains(err.Error(), "deadline") {
			t.Fatalf("Acquire = %v, want a deadline error", err)
		}
		g.Release(0)
		// Nothing was left held by the cancelled waiter.
		if err := g.Acquire(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
		g.Release(1)
	})
}
