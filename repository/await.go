package repository

import (
	"context"
	"slices"
	"time"

	"github.com/nereid-project/nereid/inference"
)

// IndexFunc reads the repository index, as a front end's core offers it.
type IndexFunc func(ctx context.Context, readyOnly bool) ([]IndexEntry, error)

// AwaitUnloaded returns once index shows no version of any of names
// ready, loading or unloading, reading it every poll; after timeout it is
// UNAVAILABLE naming the model still there, and CANCELLED when ctx ends.
// Front ends that must answer only once an unload is complete (SageMaker's
// DELETE, ModelMesh's unloadModel) share it.
func AwaitUnloaded(ctx context.Context, index IndexFunc, names []string, timeout, poll time.Duration) error {
	deadline := time.Now().Add(timeout)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return inference.Errorf(inference.CodeCancelled, "unload of model '%s' was cancelled: %w", names[0], ctx.Err())
		case <-t.C:
		}
		entries, err := index(ctx, false)
		if err != nil {
			return err
		}
		busy := slices.IndexFunc(names, func(n string) bool { return stillLoaded(entries, n) })
		if busy < 0 {
			return nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return inference.Unavailable("model '%s' did not finish unloading within %s", names[busy], timeout)
		}
		t.Reset(min(poll, left))
	}
}

// stillLoaded reports whether any version of model is ready, loading or
// unloading in the index.
func stillLoaded(entries []IndexEntry, model string) bool {
	for _, e := range entries {
		if e.Name != model {
			continue
		}
		switch e.State {
		case StateReady, StateLoading, StateUnloading:
			return true
		default: // unavailable (unloaded, or failed), unknown, never loaded
		}
	}
	return false
}
