package modelmesh

import (
	"context"
	"slices"
	"sync"

	"github.com/nereid-project/nereid/inference"
)

// modelTable is the models loaded through ModelMesh, by model id. An
// entry exists while a call holds or waits for its op, and while its model
// is loaded, so that a load and an unload of the same id (ModelMesh sends
// an unload right after cancelling a load) run one after the other.
type modelTable struct {
	mu   sync.Mutex // guards byID and every entry's refs and state
	byID map[string]*entry
}

// entry is one model id.
type entry struct {
	id string
	op chan struct{} // capacity 1: held for a whole load or unload

	refs  int        // guarded by modelTable.mu: calls holding or waiting for op
	state modelState // guarded by modelTable.mu; changed only with op held
}

// modelState is what a load left.
type modelState struct {
	loaded   bool
	leftover bool     // loaded is what a failed load could not unload
	path     string   // modelPath of the load
	repo     string   // the repository registered for it
	names    []string // the models it serves: the id first, then composing models
	size     uint64   // last measured size
}

func newModelTable() *modelTable {
	return &modelTable{byID: map[string]*entry{}}
}

// lock returns id's entry with its op held, waiting for a call in progress
// on the same id until ctx ends.
func (t *modelTable) lock(ctx context.Context, id string) (*entry, error) {
	t.mu.Lock()
	e := t.byID[id]
	if e == nil {
		e = &entry{id: id, op: make(chan struct{}, 1)}
		t.byID[id] = e
	}
	e.refs++
	t.mu.Unlock()
	select { // a free entry is taken even when ctx is done
	case e.op <- struct{}{}:
		return e, nil
	default:
	}
	select {
	case e.op <- struct{}{}:
		return e, nil
	case <-ctx.Done():
		t.mu.Lock()
		t.dropLocked(e)
		t.mu.Unlock()
		return nil, inference.Errorf(inference.CodeCancelled,
			"call for model '%s' ended while another load or unload of it ran: %w", id, ctx.Err())
	}
}

// unlock releases e's op; an entry with no model loaded and no caller is
// forgotten.
func (t *modelTable) unlock(e *entry) {
	t.mu.Lock()
	t.dropLocked(e)
	t.mu.Unlock()
	<-e.op
}

func (t *modelTable) dropLocked(e *entry) {
	e.refs--
	if e.refs == 0 && !e.state.loaded {
		delete(t.byID, e.id)
	}
}

// state returns a copy of e's state.
func (t *modelTable) state(e *entry) modelState {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := e.state
	st.names = slices.Clone(st.names)
	return st
}

// publish sets e's state; the caller holds e's op.
func (t *modelTable) publish(e *entry, st modelState) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e.state = st
}

// setSize records a measured size of a loaded model.
func (t *modelTable) setSize(e *entry, size uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e.state.loaded {
		e.state.size = size
	}
}

// known reports whether id has an entry: loaded, or with a call on it.
func (t *modelTable) known(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byID[id] != nil
}

// loaded returns id's entry when its model is loaded.
func (t *modelTable) loaded(id string) (*entry, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.byID[id]
	if e == nil || !e.state.loaded {
		return nil, false
	}
	return e, true
}

// ids lists the ids with an entry, sorted.
func (t *modelTable) ids() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]string, 0, len(t.byID))
	for id := range t.byID {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}
