// Package scheduler decides when and on which instance a model's requests
// run. The direct scheduler here hands each request to the next free
// instance; the dynamic and sequence batchers build on the same contract.
package scheduler

import (
	"context"
	"sync"
	"time"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/inference"
)

// Execution describes one call of Instance.Execute, for statistics.
type Execution struct {
	Requests     []*inference.Request
	BatchSize    int // sum of the requests' batch sizes
	ComputeInput time.Duration
	ComputeInfer time.Duration
	ComputeOut   time.Duration
	// Start and End bound the execution; zero when the scheduler did not
	// record them, in which case the recorder takes the moment it is called
	// as the end and the three durations before it as the start.
	Start, End time.Time
}

// Recorder receives what the scheduler measures. The server's per-model
// statistics implement it.
type Recorder interface {
	// Executed records one execution of a batch.
	Executed(e Execution)
	// Pending tracks requests accepted but not yet started (+1 / -1).
	Pending(delta int)
}

// Direct runs each request on its own, on the first instance that is free.
// Requests wait for an instance in arrival order; a request whose context
// ends while it waits leaves the queue without running.
type Direct struct {
	instances []backends.Instance
	free      chan int // indexes of idle instances; capacity = number of instances
	rec       Recorder
	gate      Gate // may be nil

	mu     sync.Mutex // guards closed
	closed bool
}

// NewDirect builds a scheduler over instances. rec may be nil.
func NewDirect(instances []backends.Instance, rec Recorder) *Direct {
	return NewDirectGated(instances, rec, nil)
}

// NewDirectGated is NewDirect whose executions go through gate (the rate
// limiter) when it is not nil.
func NewDirectGated(instances []backends.Instance, rec Recorder, gate Gate) *Direct {
	d := &Direct{instances: instances, free: make(chan int, len(instances)), rec: rec, gate: gate}
	for i := range instances {
		d.free <- i
	}
	return d
}

// Infer waits for a free instance and executes req on it. It returns once
// the execution has ended; the request's responses go through its sender.
func (d *Direct) Infer(ctx context.Context, req *inference.Request) error {
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return inference.Unavailable("model '%s' is unloading", req.ModelName)
	}
	d.pending(1)
	var inst int
	select {
	case inst = <-d.free:
	case <-ctx.Done():
		d.pending(-1)
		return cancelled(ctx)
	}
	d.pending(-1)
	defer func() { d.free <- inst }()
	if err := acquireGate(ctx, d.gate, inst); err != nil {
		return err
	}
	if d.gate != nil {
		defer d.gate.Release(inst)
	}
	exec, err := ExecuteBatch(ctx, d.instances[inst], []*inference.Request{req})
	if err != nil {
		return err
	}
	if d.rec != nil {
		d.rec.Executed(exec)
	}
	return nil
}

// Close refuses new requests. Requests already waiting or running finish:
// the repository unloads a version only after its last request returns.
func (d *Direct) Close() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
}

func (d *Direct) pending(delta int) {
	if d.rec != nil {
		d.rec.Pending(delta)
	}
}
