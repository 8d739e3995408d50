package server

import (
	"context"
	"time"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/scheduler"
)

// modelScheduler is what the core needs from the scheduler in front of a
// model version's instances.
type modelScheduler interface {
	// Infer queues req and returns once it has executed (or failed);
	// its responses go through the request's sender, possibly after
	// Infer returned (a decoupled model).
	Infer(ctx context.Context, req *inference.Request) error
	// Close refuses new requests and returns once nothing runs any more.
	Close()
}

var (
	_ modelScheduler = (*scheduler.Direct)(nil)
	_ modelScheduler = (*scheduler.DynamicBatcher)(nil)
	_ modelScheduler = (*scheduler.SequenceBatcher)(nil)
)

// schedulerDeps is what a scheduler needs besides the configuration.
type schedulerDeps struct {
	gate scheduler.Gate // the rate limiter; nil when it is off
	// sequence holds the translated sequence_batching, for a model that
	// has it (see sequenceOptions).
	sequence scheduler.SequenceOptions
}

// newScheduler picks the scheduler a configuration asks for: the sequence
// batcher for sequence_batching, the dynamic batcher for a batching model
// with dynamic_batching, else the direct one.
func newScheduler(cfg *inferencepb.ModelConfig, instances []backends.Instance, rec scheduler.Recorder, deps schedulerDeps) modelScheduler {
	if cfg.GetSequenceBatching() != nil {
		opts := deps.sequence
		opts.Gate = deps.gate
		return scheduler.NewSequence(instances, opts, rec)
	}
	db := cfg.GetDynamicBatching()
	if db == nil || cfg.GetMaxBatchSize() <= 0 {
		return scheduler.NewDirectGated(instances, rec, deps.gate)
	}
	opts := dynamicOptions(cfg)
	opts.Gate = deps.gate
	return scheduler.NewDynamic(instances, opts, rec)
}

// dynamicOptions translates dynamic_batching into the batcher's options.
func dynamicOptions(cfg *inferencepb.ModelConfig) scheduler.DynamicOptions {
	db := cfg.GetDynamicBatching()
	opts := scheduler.DynamicOptions{
		MaxBatchSize:     int(cfg.GetMaxBatchSize()),
		MaxQueueDelay:    time.Duration(db.GetMaxQueueDelayMicroseconds()) * time.Microsecond,
		PreserveOrdering: db.GetPreserveOrdering(),
		PriorityLevels:   int(db.GetPriorityLevels()),
		DefaultPriority:  int(db.GetDefaultPriorityLevel()),
		DefaultPolicy:    queuePolicy(db.GetDefaultQueuePolicy()),
		PriorityPolicy:   map[int]scheduler.QueuePolicy{},
		RaggedInputs:     map[string]bool{},
	}
	for _, size := range db.GetPreferredBatchSize() {
		opts.PreferredBatchSizes = append(opts.PreferredBatchSizes, int(size))
	}
	for level, p := range db.GetPriorityQueuePolicy() {
		opts.PriorityPolicy[int(level)] = queuePolicy(p)
	}
	for _, in := range cfg.GetInput() {
		if in.GetAllowRaggedBatch() {
			opts.RaggedInputs[in.GetName()] = true
		}
	}
	return opts
}

func queuePolicy(p *inferencepb.ModelQueuePolicy) scheduler.QueuePolicy {
	qp := scheduler.QueuePolicy{
		DefaultTimeout:       time.Duration(p.GetDefaultTimeoutMicroseconds()) * time.Microsecond,
		AllowTimeoutOverride: p.GetAllowTimeoutOverride(),
		MaxQueueSize:         int(p.GetMaxQueueSize()),
	}
	if p.GetTimeoutAction() == inferencepb.ModelQueuePolicy_DELAY {
		qp.TimeoutAction = scheduler.Delay
	}
	return qp
}
