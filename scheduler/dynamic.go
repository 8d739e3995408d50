package scheduler

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/inference"
)

// TimeoutAction is what happens to a queued request whose timeout expires.
type TimeoutAction int

// Timeout actions, as config.pbtxt's ModelQueuePolicy names them.
const (
	// Reject fails the request with UNAVAILABLE.
	Reject TimeoutAction = iota
	// Delay keeps the request but serves it only after every request of
	// its priority level whose timeout has not expired.
	Delay
)

// QueuePolicy bounds one priority level's queue.
type QueuePolicy struct {
	TimeoutAction        TimeoutAction
	DefaultTimeout       time.Duration // 0: no timeout
	AllowTimeoutOverride bool          // honour the request's "timeout" parameter
	MaxQueueSize         int           // 0: unbounded
}

// DynamicOptions configures a DynamicBatcher; the fields mirror
// config.pbtxt's dynamic_batching.
type DynamicOptions struct {
	MaxBatchSize        int
	PreferredBatchSizes []int
	MaxQueueDelay       time.Duration
	PreserveOrdering    bool
	// PriorityLevels is the number of levels (1 is the highest); 0 means one
	// level and requests' priorities are ignored.
	PriorityLevels  int
	DefaultPriority int
	DefaultPolicy   QueuePolicy
	PriorityPolicy  map[int]QueuePolicy
	// RaggedInputs names the inputs whose non-batch shape may differ
	// between requests of one batch (allow_ragged_batch).
	RaggedInputs map[string]bool
	// Gate, when set, admits each execution (the rate limiter).
	Gate Gate
}

// DynamicBatcher gathers queued requests into batches of up to MaxBatchSize
// and hands each batch to a free instance.
//
// One goroutine, started by NewDynamic and stopped by Close, owns the queues:
// it wakes on a new request, on a finished execution, or on the single timer
// armed for the oldest request's queue delay or the nearest timeout. It never
// polls. Each batch executes on its own goroutine, counted in a WaitGroup that
// Close waits for.
type DynamicBatcher struct {
	opts      DynamicOptions
	rec       Recorder
	instances []backends.Instance

	wake chan struct{} // cap 1: something changed
	stop chan struct{}
	done chan struct{} // closed when the batching goroutine has returned
	runs sync.WaitGroup

	mu      sync.Mutex // guards the fields below
	closed  bool
	levels  []*level // index 0 is priority 1 (highest)
	free    []int    // indexes of the idle instances
	nextSeq uint64
	// PreserveOrdering: responses are released in arrival order. turn is
	// the sequence number whose responses flow now; waiting holds the
	// later requests that have not had their turn yet.
	turn    uint64
	waiting map[uint64]*pending
}

// level is one priority level's queue.
type level struct {
	policy  QueuePolicy
	queue   []*pending // in arrival order
	delayed []*pending // timed out with TimeoutAction Delay
}

func (l *level) size() int { return len(l.queue) + len(l.delayed) }

// pending is one queued request and the channel its caller waits on.
type pending struct {
	ctx      context.Context //nolint:containedctx // the caller's context, checked while the request waits
	req      *inference.Request
	seq      uint64
	enqueued time.Time
	deadline time.Time // zero: none
	err      error
	done     chan struct{}  // closed when the request left the batcher (executed or dropped); err may be read then
	taken    bool           // removed from the queue (executing or dropped)
	order    *orderedSender // PreserveOrdering only
}

// NewDynamic starts a dynamic batcher over instances. rec may be nil.
func NewDynamic(instances []backends.Instance, opts DynamicOptions, rec Recorder) *DynamicBatcher {
	if opts.MaxBatchSize < 1 {
		opts.MaxBatchSize = 1
	}
	opts.PreferredBatchSizes = slices.Clone(opts.PreferredBatchSizes)
	slices.Sort(opts.PreferredBatchSizes)
	n := max(opts.PriorityLevels, 1)
	d := &DynamicBatcher{
		opts:      opts,
		rec:       rec,
		instances: instances,
		wake:      make(chan struct{}, 1),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
		free:      make([]int, len(instances)),
		waiting:   map[uint64]*pending{},
	}
	for i := range d.free {
		d.free[i] = i
	}
	for i := range n {
		p, ok := opts.PriorityPolicy[i+1]
		if !ok {
			p = opts.DefaultPolicy
		}
		d.levels = append(d.levels, &level{policy: p})
	}
	go d.loop()
	return d
}

func (d *DynamicBatcher) signal() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Infer queues req and waits until its batch has executed; its responses
// go through its sender. A request whose context ends while it is queued is
// dropped before it runs.
func (d *DynamicBatcher) Infer(ctx context.Context, req *inference.Request) error {
	p, err := d.enqueue(ctx, req)
	if err != nil {
		return err
	}
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		d.mu.Lock()
		if !p.taken {
			// Still queued: drop it now rather than at batch formation.
			d.removeLocked(p)
			d.mu.Unlock()
			d.pending(-1)
			d.signal()
			err := cancelled(ctx)
			d.complete(p, err) // keeps PreserveOrdering's sequence moving
			return err
		}
		d.mu.Unlock()
		// Already executing: the backend sees the same context and
		// returns promptly; wait for the result so the batch stays whole.
		<-p.done
		return p.err
	}
}

func (d *DynamicBatcher) enqueue(ctx context.Context, req *inference.Request) (*pending, error) {
	prio, timeout, err := d.requestPolicy(req)
	if err != nil {
		return nil, err
	}
	if req.BatchSize > d.opts.MaxBatchSize {
		return nil, inference.InvalidArg("inference request batch-size must be <= %d for '%s'", d.opts.MaxBatchSize, req.ModelName)
	}
	now := time.Now()
	p := &pending{ctx: ctx, req: req, enqueued: now, done: make(chan struct{})}
	if timeout > 0 {
		p.deadline = now.Add(timeout)
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, inference.Unavailable("model '%s' is unloading", req.ModelName)
	}
	l := d.levels[prio-1]
	if l.policy.MaxQueueSize > 0 && l.size() >= l.policy.MaxQueueSize {
		d.mu.Unlock()
		return nil, inference.Unavailable("Exceeds maximum queue size")
	}
	p.seq = d.nextSeq
	d.nextSeq++
	if d.opts.PreserveOrdering {
		p.order = &orderedSender{ResponseSender: req.Sender(), d: d, p: p, turn: p.seq == d.turn}
		req.SetSender(p.order)
		if !p.order.turn {
			d.waiting[p.seq] = p
		}
	}
	l.queue = append(l.queue, p)
	d.mu.Unlock()
	d.pending(1)
	d.signal()
	return p, nil
}

// requestPolicy returns the request's priority level (1-based) and timeout
// from its "priority" and "timeout" parameters and the queue policies.
func (d *DynamicBatcher) requestPolicy(req *inference.Request) (int, time.Duration, error) {
	levels := len(d.levels)
	prio := d.opts.DefaultPriority
	if v, ok := req.Parameters["priority"]; ok {
		p, isInt := req.Parameters.Int("priority")
		if !isInt || p < 0 {
			return 0, 0, inference.InvalidArg("invalid 'priority' parameter %v for model '%s': must be a non-negative integer", v, req.ModelName)
		}
		if p > 0 && d.opts.PriorityLevels > 0 {
			if p > int64(d.opts.PriorityLevels) {
				return 0, 0, inference.InvalidArg("priority %d is out of range for model '%s': priority_levels is %d", p, req.ModelName, d.opts.PriorityLevels)
			}
			prio = int(p)
		}
	}
	if prio < 1 || prio > levels {
		prio = levels // default level outside the range: lowest priority
	}
	policy := d.levels[prio-1].policy
	timeout := policy.DefaultTimeout
	if v, ok := req.Parameters["timeout"]; ok {
		t, isInt := req.Parameters.Int("timeout")
		if !isInt || t < 0 {
			return 0, 0, inference.InvalidArg("invalid 'timeout' parameter %v for model '%s': must be a non-negative number of microseconds", v, req.ModelName)
		}
		if policy.AllowTimeoutOverride || timeout == 0 || time.Duration(t)*time.Microsecond < timeout {
			timeout = time.Duration(t) * time.Microsecond
		}
	}
	return prio, timeout, nil
}

// Close refuses new requests, fails those still queued, and waits for the
// batching goroutine and every running batch to return.
func (d *DynamicBatcher) Close() {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		<-d.done
		return
	}
	d.closed = true
	var dropped []*pending
	for _, l := range d.levels {
		dropped = append(dropped, l.queue...)
		dropped = append(dropped, l.delayed...)
		l.queue, l.delayed = nil, nil
	}
	for _, p := range dropped {
		p.taken = true
	}
	d.mu.Unlock()
	for _, p := range dropped {
		d.pending(-1)
		d.complete(p, inference.Unavailable("model '%s' was unloaded before the request ran", p.req.ModelName))
	}
	close(d.stop)
	<-d.done
	d.runs.Wait()
}

// loop is the batching goroutine.
func (d *DynamicBatcher) loop() {
	defer close(d.done)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		next := d.schedule()
		var timerC <-chan time.Time
		if !next.IsZero() {
			wait := time.Until(next)
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			timerC = timer.C
		}
		select {
		case <-d.stop:
			return
		case <-d.wake:
		case <-timerC:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// schedule expires timed-out requests, dispatches every batch that is due
// to a free instance, and returns when it next needs to look again (zero:
// only when woken).
func (d *DynamicBatcher) schedule() time.Time {
	now := time.Now()
	var (
		rejected []*pending
		next     time.Time
	)
	soonest := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	d.mu.Lock()
	for _, l := range d.levels {
		kept := l.queue[:0]
		for _, p := range l.queue {
			switch {
			case p.ctx.Err() != nil:
				p.taken = true
				rejected = append(rejected, p)
			case !p.deadline.IsZero() && !now.Before(p.deadline):
				if l.policy.TimeoutAction == Delay {
					p.deadline = time.Time{}
					l.delayed = append(l.delayed, p)
				} else {
					p.taken = true
					rejected = append(rejected, p)
				}
			default:
				kept = append(kept, p)
				soonest(p.deadline)
			}
		}
		clear(l.queue[len(kept):])
		l.queue = kept
	}
	var batches [][]*pending
	for idle := len(d.free); len(batches) < idle; {
		batch, due := d.formLocked(now)
		if batch == nil {
			soonest(due)
			break
		}
		batches = append(batches, batch)
	}
	insts := d.free[len(d.free)-len(batches):]
	d.free = d.free[:len(d.free)-len(batches)]
	insts = slices.Clone(insts)
	d.mu.Unlock()

	for _, p := range rejected {
		d.pending(-1)
		if p.ctx.Err() != nil {
			d.complete(p, cancelled(p.ctx))
		} else {
			d.complete(p, inference.Unavailable("Request timeout expired"))
		}
	}
	for i, b := range batches {
		d.runs.Add(1)
		go d.execute(insts[i], b)
	}
	return next
}

// formLocked takes the next batch off the queues if one is due: full, at a
// preferred size, or its oldest request has waited MaxQueueDelay. Otherwise
// it returns the time the oldest request becomes due.
func (d *DynamicBatcher) formLocked(now time.Time) ([]*pending, time.Time) {
	// Candidates in service order: higher priorities first, and within a
	// level the timely requests before the delayed ones.
	var (
		cands    []*pending
		size     int
		oldest   time.Time
		shapeRef *inference.Request
	)
	full := false
	for _, l := range d.levels {
		for _, q := range [][]*pending{l.queue, l.delayed} {
			for _, p := range q {
				if shapeRef == nil {
					shapeRef = p.req
				} else if !d.compatible(shapeRef, p.req) {
					full = true
					break
				}
				if size+p.req.BatchSize > d.opts.MaxBatchSize {
					full = true
					break
				}
				cands = append(cands, p)
				size += p.req.BatchSize
				if oldest.IsZero() || p.enqueued.Before(oldest) {
					oldest = p.enqueued
				}
				if size == d.opts.MaxBatchSize {
					full = true
					break
				}
			}
			if full {
				break
			}
		}
		if full {
			break
		}
	}
	if len(cands) == 0 {
		return nil, time.Time{}
	}
	due := oldest.Add(d.opts.MaxQueueDelay)
	if !full && len(d.opts.PreferredBatchSizes) > 0 {
		// Cut at the largest preferred size the queue can fill; send it at
		// once. Without one, wait for more requests until the delay ends.
		if cut := d.preferredCut(cands); cut > 0 {
			cands = cands[:cut]
			full = true
		}
	}
	if !full && d.opts.MaxQueueDelay > 0 && now.Before(due) {
		return nil, due
	}
	for _, p := range cands {
		p.taken = true
		d.removeLocked(p)
	}
	return cands, time.Time{}
}

// preferredCut returns how many candidates make up the largest preferred
// batch size reachable exactly, or 0.
func (d *DynamicBatcher) preferredCut(cands []*pending) int {
	best, size := 0, 0
	for i, p := range cands {
		size += p.req.BatchSize
		if _, ok := slices.BinarySearch(d.opts.PreferredBatchSizes, size); ok {
			best = i + 1
		}
	}
	return best
}

// compatible reports whether b can join a batch started by a: every input
// has the same shape past the batch dimension, unless ragged batching is
// allowed for it.
func (d *DynamicBatcher) compatible(a, b *inference.Request) bool {
	if len(a.Inputs) != len(b.Inputs) {
		return false
	}
	for i := range a.Inputs {
		x := &a.Inputs[i]
		y := b.Input(x.Name)
		if y == nil || x.DataType != y.DataType {
			return false
		}
		if d.opts.RaggedInputs[x.Name] {
			continue
		}
		if len(x.Shape) != len(y.Shape) || len(x.Shape) == 0 || !slices.Equal(x.Shape[1:], y.Shape[1:]) {
			return false
		}
	}
	return true
}

// removeLocked takes p out of whichever queue holds it.
func (d *DynamicBatcher) removeLocked(p *pending) {
	p.taken = true
	for _, l := range d.levels {
		if i := slices.Index(l.queue, p); i >= 0 {
			l.queue = slices.Delete(l.queue, i, i+1)
			return
		}
		if i := slices.Index(l.delayed, p); i >= 0 {
			l.delayed = slices.Delete(l.delayed, i, i+1)
			return
		}
	}
}

// execute runs one batch on instance inst (an index), completes its
// requests and returns the instance to the free list.
func (d *DynamicBatcher) execute(inst int, batch []*pending) {
	defer d.runs.Done()
	reqs := make([]*inference.Request, len(batch))
	for i, p := range batch {
		reqs[i] = p.req
		d.pending(-1)
	}
	// The batch runs until every one of its requests is cancelled.
	ctx, cancel := batchContext(batch)
	exec, err := d.run(ctx, inst, reqs)
	cancel()
	if err == nil && d.rec != nil {
		d.rec.Executed(exec)
	}
	d.mu.Lock()
	d.free = append(d.free, inst)
	d.mu.Unlock()
	d.signal()
	for _, p := range batch {
		d.complete(p, err)
	}
}

// run executes a batch on instance i once the gate, if any, admits it.
func (d *DynamicBatcher) run(ctx context.Context, i int, reqs []*inference.Request) (Execution, error) {
	if err := acquireGate(ctx, d.opts.Gate, i); err != nil {
		return Execution{}, err
	}
	if g := d.opts.Gate; g != nil {
		defer g.Release(i)
	}
	return ExecuteBatch(ctx, d.instances[i], reqs)
}

// complete releases a request to its caller once it has left the batcher:
// executed (err is the execution's failure, if any) or dropped. With
// PreserveOrdering, a failed request is given up (its caller reports the
// error and the core's response path is never used again); one whose final
// flag was already sent, and is only held for its turn, keeps its responses
// and is not failed, as the Instance contract says.
func (d *DynamicBatcher) complete(p *pending, err error) {
	if err != nil && p.order != nil && p.order.abandon() {
		err = nil
	}
	p.err = err
	close(p.done)
}

// orderedSender holds back a request's responses until every request that
// arrived before it has had its final flag (preserve_ordering), then passes
// them on in order.
type orderedSender struct {
	inference.ResponseSender // the request's own path
	d                        *DynamicBatcher
	p                        *pending

	mu        sync.Mutex // guards the fields below; held while forwarding, which keeps the order
	turn      bool       // responses flow straight through
	held      []heldResponse
	final     bool  // the final flag was sent, the request failed, or it was given up
	failed    error // the backend failed the request (Fail), held for its turn
	abandoned bool  // the batcher failed the request: nothing more is forwarded
}

type heldResponse struct {
	resp  *inference.Response
	final bool
}

func (o *orderedSender) Send(resp *inference.Response, final bool) error {
	o.mu.Lock()
	if o.final {
		o.mu.Unlock()
		return inference.Internal("response sent after the final response")
	}
	o.final = final
	if !o.turn {
		o.held = append(o.held, heldResponse{resp, final})
		o.mu.Unlock()
		return nil
	}
	err := o.ResponseSender.Send(resp, final)
	o.mu.Unlock()
	if final {
		o.d.passTurn()
	}
	return err
}

// Fail is the backend failing the request: in its turn, like a response.
func (o *orderedSender) Fail(err error) {
	o.mu.Lock()
	if o.final {
		o.mu.Unlock()
		return
	}
	o.final = true
	if !o.turn {
		o.failed = err
		o.mu.Unlock()
		return
	}
	o.ResponseSender.Fail(err)
	o.mu.Unlock()
	o.d.passTurn()
}

// abandon gives the request up after the batcher failed it, unless its
// final flag was already sent: then it reports true and the request keeps
// its responses.
func (o *orderedSender) abandon() (keep bool) {
	o.mu.Lock()
	if o.final {
		o.mu.Unlock()
		return true
	}
	o.final, o.abandoned = true, true
	o.held = nil
	turn := o.turn
	o.mu.Unlock()
	if turn {
		o.d.passTurn()
	}
	return false
}

// passTurn gives the turn to the next request in arrival order and
// releases what it holds, on to the first one that has not finished.
func (d *DynamicBatcher) passTurn() {
	for {
		d.mu.Lock()
		d.turn++
		next := d.waiting[d.turn]
		delete(d.waiting, d.turn)
		d.mu.Unlock()
		if next == nil {
			return
		}
		o := next.order
		o.mu.Lock()
		o.turn = true
		if !o.abandoned {
			for _, h := range o.held {
				_ = o.ResponseSender.Send(h.resp, h.final)
			}
			if o.failed != nil {
				o.ResponseSender.Fail(o.failed)
			}
		}
		o.held = nil
		done := o.final
		o.mu.Unlock()
		if !done {
			return
		}
	}
}

func (d *DynamicBatcher) pending(delta int) {
	if d.rec != nil {
		d.rec.Pending(delta)
	}
}

// batchContext returns a context that ends when every request of the batch
// has been cancelled, so one client going away does not abort the others.
func batchContext(batch []*pending) (context.Context, context.CancelFunc) {
	ctxs := make([]context.Context, len(batch))
	for i, p := range batch {
		ctxs[i] = p.ctx
	}
	return allDone(ctxs)
}
