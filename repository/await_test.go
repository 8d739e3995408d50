package repository

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nereid-project/nereid/inference"
)

func TestAwaitUnloaded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var unloaded atomic.Bool
		index := func(context.Context, bool) ([]IndexEntry, error) {
			state := StateUnloading
			if unloaded.Load() {
				state = StateUnavailable
			}
			return []IndexEntry{{Name: "a", Version: "1", State: state}, {Name: "b", Version: "1", State: StateReady}}, nil
		}
		go func() { time.Sleep(3 * time.Second); unloaded.Store(true) }()
		start := time.Now()
		if err := AwaitUnloaded(context.Background(), index, []string{"a"}, time.Minute, time.Second); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took < 3*time.Second || took > 4*time.Second {
			t.Errorf("returned after %v, want as soon as a poll saw it unloaded", took)
		}
		err := AwaitUnloaded(context.Background(), index, []string{"a", "b"}, 10*time.Second, time.Second)
		wantErr(t, err, inference.CodeUnavailable, "model 'b' did not finish unloading within 10s")
		ctx, cancel := context.WithCancel(context.Background())
		go func() { time.Sleep(time.Second); cancel() }()
		err = AwaitUnloaded(ctx, index, []string{"b"}, time.Minute, 100*time.Millisecond)
		wantErr(t, err, inference.CodeCancelled, "unload of model 'b' was cancelled")
	})
}
