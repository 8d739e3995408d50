package repository

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nereid-project/nereid/inference"
)

func TestPollAddsChangesAndRemoves(t *testing.T) {
	repo := t.TempDir()
	keepDir := writeModel(t, repo, "keep", simpleConfig("keep"), 1)
	writeModel(t, repo, "gone", simpleConfig("gone"), 1)
	loader := newFakeLoader()
	m := newManager(t, loader, ModePoll, repo)
	ctx := context.Background()
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}

	// Nothing changed: nothing reloads.
	if err := m.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if n := loader.loadCount("keep"); n != 1 {
		t.Fatalf("unchanged model loaded %d times", n)
	}

	// Add a model, add a version directory under "keep" (with a policy
	// that serves it), and remove "gone" while a request holds it.
	writeModel(t, repo, "added", simpleConfig("added"), 1)
	mustWrite(t, filepath.Join(keepDir, "config.pbtxt"), simpleConfig("keep")+"version_policy { all { } }")
	addVersion(t, keepDir, 2)
	h, err := m.Acquire(context.Background(), "gone", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(repo, "gone")); err != nil {
		t.Fatal(err)
	}
	if err := m.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.ReadyVersions("keep"); !slices.Equal(got, []int64{1, 2}) {
		t.Errorf("keep versions = %v", got)
	}
	if got, _ := m.ReadyVersions("added"); !slices.Equal(got, []int64{1}) {
		t.Errorf("added versions = %v", got)
	}
	if e, _ := entry(m, "gone", "1"); e.State != StateUnloading {
		t.Errorf("removed model with a held handle: %+v", e)
	}
	gone := loader.servable(t, "gone", 1)
	if gone.isClosed() {
		t.Fatal("removed model closed under a held handle")
	}
	h.Release()
	gone.waitClosed(t)
	if err := m.waitDrained(ctx); err != nil {
		t.Fatal(err)
	}
	if got := indexOf(m, false); got != "added|1|READY|\nkeep|1|READY|\nkeep|2|READY|\n" {
		t.Errorf("index:\n%s", got)
	}
	if !m.AllReady() {
		t.Error("not AllReady")
	}

	// A broken edit keeps the old versions serving and is not retried
	// until the files change again.
	mustWrite(t, filepath.Join(keepDir, "config.pbtxt"), "backend: \"fake\" max_batch_size: -1")
	wantErr(t, m.Poll(ctx), inference.CodeInternal, "failed to load 'keep', failed to poll from model repository")
	if err := m.Poll(ctx); err != nil {
		t.Errorf("an unchanged broken model was retried: %v", err)
	}
	if got, _ := m.ReadyVersions("keep"); !slices.Equal(got, []int64{1, 2}) {
		t.Errorf("keep versions after a broken edit = %v", got)
	}
	// Fixed: reloaded.
	mustWrite(t, filepath.Join(keepDir, "config.pbtxt"), simpleConfig("keep"))
	before := loader.loadCount("keep")
	if err := m.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if loader.loadCount("keep") == before {
		t.Error("fixed model not reloaded")
	}
	if got, _ := m.ReadyVersions("keep"); !slices.Equal(got, []int64{2}) {
		t.Errorf("keep versions after the fix = %v", got)
	}
}

func TestPollDuplicate(t *testing.T) {
	r1, r2 := t.TempDir(), t.TempDir()
	writeModel(t, r1, "m", simpleConfig("m"), 1)
	loader := newFakeLoader()
	m := newManager(t, loader, ModePoll, r1, r2)
	ctx := context.Background()
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	writeModel(t, r2, "m", simpleConfig("m"), 1)
	wantErr(t, m.Poll(ctx), inference.CodeInternal, "model appears in two or more repositories")
	loader.servable(t, "m", 1).waitClosed(t)
	if err := m.Poll(ctx); err != nil {
		t.Errorf("duplicate reported twice: %v", err)
	}
	if got := indexOf(m, false); got != "m||UNAVAILABLE|model appears in two or more repositories\n" {
		t.Errorf("index:\n%s", got)
	}
	if err := os.RemoveAll(filepath.Join(r2, "m")); err != nil {
		t.Fatal(err)
	}
	if err := m.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if got := indexOf(m, false); got != "m|1|READY|\n" {
		t.Errorf("index after the duplicate went:\n%s", got)
	}
}

// TestRunPollsOnItsTicker drives Run's ticker with virtual time.
func TestRunPollsOnItsTicker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		repo := t.TempDir()
		writeModel(t, repo, "a", simpleConfig("a"), 1)
		loader := newFakeLoader()
		m, err := New(Options{Paths: []string{repo}, Mode: ModePoll, PollInterval: 15 * time.Second, Loader: loader})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		if err := m.Start(ctx); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			m.Run(ctx)
			close(done)
		}()

		writeModel(t, repo, "b", simpleConfig("b"), 1)
		time.Sleep(14 * time.Second)
		synctest.Wait()
		if _, err := m.Acquire(context.Background(), "b", ""); err == nil {
			t.Fatal("polled before the interval")
		}
		time.Sleep(time.Second)
		synctest.Wait()
		h, err := m.Acquire(context.Background(), "b", "")
		if err != nil {
			t.Fatalf("not polled after the interval: %v", err)
		}
		h.Release()

		cancel()
		<-done
		if err := m.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
}

func TestRunStopsOnClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		for _, mode := range []ControlMode{ModeNone, ModePoll, ModeExplicit} {
			m, err := New(Options{Paths: []string{t.TempDir()}, Mode: mode, PollInterval: time.Second, Loader: newFakeLoader()})
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() {
				m.Run(context.Background())
				close(done)
			}()
			time.Sleep(3 * time.Second)
			if err := m.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			<-done
		}
	})
}

// TestReloadStates looks at a reload half way, with virtual time so that
// "half way" is exact: the load is parked at the loader's gate.
func TestReloadStates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		repo := t.TempDir()
		dir := writeModel(t, repo, "m", simpleConfig("m"), 1)
		loader := newFakeLoader()
		m, err := New(Options{Paths: []string{repo}, Mode: ModeExplicit, Loader: loader})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if err := m.Load(ctx, "m", LoadOptions{}); err != nil {
			t.Fatal(err)
		}
		mustWrite(t, filepath.Join(dir, "config.pbtxt"), simpleConfig("m")+"version_policy { latest { num_versions: 2 } }")
		addVersion(t, dir, 2)
		gate := make(chan struct{})
		loader.gate["m/2"] = gate
		loader.gate["m/1"] = gate
		done := make(chan error, 1)
		go func() { done <- m.Load(ctx, "m", LoadOptions{}) }()
		synctest.Wait()
		if got := indexOf(m, false); got != "m|1|READY|\nm|2|LOADING|\n" {
			t.Errorf("index mid-reload:\n%s", got)
		}
		if m.AllReady() {
			t.Error("AllReady mid-load")
		}
		// Unload waits for the load of the same model.
		unloaded := make(chan error, 1)
		go func() { unloaded <- m.Unload(ctx, "m", false) }()
		synctest.Wait()
		select {
		case err := <-unloaded:
			t.Fatalf("Unload ran during a load: %v", err)
		default:
		}
		close(gate)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if err := <-unloaded; err != nil {
			t.Fatal(err)
		}
		if err := m.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if got := indexOf(m, false); !strings.Contains(got, "m|1|UNAVAILABLE|unloaded\nm|2|UNAVAILABLE|unloaded\n") {
			t.Errorf("index after unload:\n%s", got)
		}
	})
}
