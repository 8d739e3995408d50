package scheduler

import "context"

// Gate admits executions on a model's instances: the rate limiter
// (ratelimit.Group) implements it. Instances are named by their index in
// the slice the scheduler was built with. A scheduler without a gate runs
// a batch as soon as it has a free instance.
type Gate interface {
	// Acquire blocks until instance i may execute one batch, or ctx ends;
	// it returns ctx's error in the second case and then holds nothing.
	Acquire(ctx context.Context, i int) error
	// Release ends the execution that Acquire admitted.
	Release(i int)
}
