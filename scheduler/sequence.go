package scheduler

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/inference"
)

// SequenceStrategy is how the sequence batcher forms batches.
type SequenceStrategy int

// The strategies of config.pbtxt's sequence_batching.
const (
	// SequenceDirect gives each sequence a slot, a fixed batch row of one
	// instance; a batch takes the next request of every slot, padding
	// empty slots below the highest busy one with not-ready rows.
	SequenceDirect SequenceStrategy = iota
	// SequenceOldest gives each sequence a candidate slot of an instance
	// and dynamically batches the oldest requests of the candidates, at
	// most one per sequence in flight.
	SequenceOldest
)

// DefaultSequenceIdle is Triton's max_sequence_idle_microseconds default.
const DefaultSequenceIdle = time.Second

// SequenceOptions configures a SequenceBatcher; the fields mirror
// config.pbtxt's sequence_batching.
type SequenceOptions struct {
	Strategy SequenceStrategy
	// MaxBatchSize is the model's max_batch_size (0: the model does not
	// batch and requests carry no batch dimension).
	MaxBatchSize int
	// MaxCandidateSequences is the oldest strategy's slots per instance;
	// 0 means max(1, MaxBatchSize), as the direct strategy has.
	MaxCandidateSequences int
	// MaxSequenceIdle frees the slot of a sequence that received no
	// request for this long; 0 means DefaultSequenceIdle.
	MaxSequenceIdle time.Duration
	// MaxQueueDelay: direct strategy, how long a batch may wait for
	// MinimumSlotUtilization; oldest strategy, the dynamic batching delay.
	MaxQueueDelay          time.Duration
	MinimumSlotUtilization float64
	PreferredBatchSizes    []int // oldest strategy
	PreserveOrdering       bool  // oldest strategy
	Controls               []SequenceControl
	States                 []SequenceState
	// ModelOutputs names the configured outputs; a state output not among
	// them is removed from responses.
	ModelOutputs map[string]bool
	// RaggedInputs names inputs whose shapes may differ within a batch.
	RaggedInputs map[string]bool
	// Gate, when set, admits each execution (the rate limiter).
	Gate   Gate
	Logger zerolog.Logger
}

// SequenceBatcher routes the requests of each sequence (correlation ID) to
// one slot of one instance, in order, adds the control inputs the model
// declares and carries its implicit state from one request to the next.
//
// Goroutines: one reaper, which frees the slots of idle sequences and
// rejects backlogged sequences whose timeout expired, and with the direct
// strategy one batcher per instance; with the oldest strategy each instance
// has a DynamicBatcher. Close stops them all and waits for them.
type SequenceBatcher struct {
	opts    SequenceOptions
	rec     Recorder
	runners []*seqRunner
	corrid  *SequenceControl
	// stateOutputs names state outputs that are not model outputs.
	stateOutputs map[string]bool

	stop       chan struct{}
	reaperWake chan struct{} // cap 1
	wg         sync.WaitGroup
	closeOnce  sync.Once

	mu      sync.Mutex // guards the fields below and every slot and sequence
	closed  bool
	active  map[CorrelationID]*sequence // started, not yet ended
	free    []*seqSlot                  // slots without a sequence
	backlog []*sequence                 // sequences waiting for a slot, oldest first
}

// seqRunner is one instance and its slots.
type seqRunner struct {
	index int // the instance's index, for the Gate
	inst  backends.Instance
	slots []*seqSlot
	wake  chan struct{}   // cap 1; direct strategy
	dyn   *DynamicBatcher // oldest strategy
}

// seqSlot is one batch row (direct) or candidate (oldest) of an instance.
type seqSlot struct {
	runner *seqRunner
	index  int
	seq    *sequence     // nil when free
	queue  []*seqRequest // the sequence's requests not yet running
	busy   bool          // oldest: a request of this slot is running
	// awaiting is the direct strategy's request of this slot that ran
	// and has not had its final response yet: the slot's next request
	// waits for it (it needs the state the final response carries).
	awaiting *seqRequest
	// state holds the implicit state of the slot's sequence, one entry per
	// SequenceOptions.States; a zero Tensor means the initial state.
	state []inference.Tensor
}

// sequence is one correlation ID's run from its START.
type sequence struct {
	id       CorrelationID
	slot     *seqSlot      // nil while in the backlog
	queue    []*seqRequest // backlog: requests waiting for a slot
	lastSeen time.Time
	expires  time.Time // backlog: the earliest request timeout; zero: none
}

// seqRequest is one queued request. done is closed when the direct
// strategy has its result, or, with the oldest strategy, when its turn has
// come; err set with done closed and no result means it was refused.
type seqRequest struct {
	ctx        context.Context //nolint:containedctx // the caller's context, checked while the request waits
	req        *inference.Request
	id         CorrelationID
	start, end bool
	enqueued   time.Time
	seq        *sequence
	slot       *seqSlot // where it ran
	release    bool     // not a request: frees the slot (idle sequence)
	taken      bool     // left the queue
	finished   bool     // had its final response, or failed (guarded by the batcher's mu)
	err        error
	done       chan struct{}
}

// seqSender is the response path the sequence batcher puts in front of each
// request's own: it keeps the implicit state a response carries, removes
// the state outputs the model does not declare, and moves the slot on once
// the final response is through.
type seqSender struct {
	inference.ResponseSender
	s  *SequenceBatcher
	sr *seqRequest
}

func (w *seqSender) Send(resp *inference.Response, final bool) error {
	if resp != nil {
		w.s.mu.Lock()
		w.s.keepStateLocked(w.sr, resp)
		w.s.mu.Unlock()
	}
	err := w.ResponseSender.Send(resp, final)
	if final {
		w.s.finished(w.sr)
	}
	return err
}

func (w *seqSender) Fail(err error) {
	w.ResponseSender.Fail(err)
	w.s.finished(w.sr)
}

// NewSequence starts a sequence batcher over instances. rec may be nil.
func NewSequence(instances []backends.Instance, opts SequenceOptions, rec Recorder) *SequenceBatcher {
	if opts.MaxSequenceIdle <= 0 {
		opts.MaxSequenceIdle = DefaultSequenceIdle
	}
	slots := max(opts.MaxBatchSize, 1)
	if opts.Strategy == SequenceOldest && opts.MaxCandidateSequences > 0 {
		slots = opts.MaxCandidateSequences
	}
	s := &SequenceBatcher{
		opts:         opts,
		rec:          rec,
		stop:         make(chan struct{}),
		reaperWake:   make(chan struct{}, 1),
		active:       map[CorrelationID]*sequence{},
		stateOutputs: map[string]bool{},
	}
	for i := range opts.Controls {
		if opts.Controls[i].Kind == ControlCorrID {
			s.corrid = &opts.Controls[i]
		}
	}
	for _, st := range opts.States {
		if !opts.ModelOutputs[st.OutputName] {
			s.stateOutputs[st.OutputName] = true
		}
	}
	for i, inst := range instances {
		r := &seqRunner{index: i, inst: inst, wake: make(chan struct{}, 1)}
		for j := range slots {
			r.slots = append(r.slots, &seqSlot{runner: r, index: j})
		}
		s.runners = append(s.runners, r)
	}
	// Free slots in the order sequences take them: the lowest batch row
	// of each instance first, so that sequences spread over instances.
	for j := range slots {
		for _, r := range s.runners {
			s.free = append(s.free, r.slots[j])
		}
	}
	for _, r := range s.runners {
		if opts.Strategy == SequenceOldest {
			dopts := DynamicOptions{
				MaxBatchSize:        max(opts.MaxBatchSize, 1),
				PreferredBatchSizes: opts.PreferredBatchSizes,
				MaxQueueDelay:       opts.MaxQueueDelay,
				PreserveOrdering:    opts.PreserveOrdering,
				RaggedInputs:        opts.RaggedInputs,
			}
			if opts.Gate != nil {
				dopts.Gate = instanceGate{opts.Gate, r.index}
			}
			r.dyn = NewDynamic([]backends.Instance{r.inst}, dopts, rec)
			continue
		}
		s.wg.Add(1)
		go s.directLoop(r)
	}
	s.wg.Add(1)
	go s.reaper()
	return s
}

// instanceGate is a Gate for a one-instance scheduler that stands for
// instance index of the model.
type instanceGate struct {
	g     Gate
	index int
}

func (g instanceGate) Acquire(ctx context.Context, _ int) error { return g.g.Acquire(ctx, g.index) }
func (g instanceGate) Release(int)                              { g.g.Release(g.index) }

// Infer queues req behind the earlier requests of its sequence and returns
// once it has executed; its responses go through its sender. Errors and
// their texts are Triton's.
func (s *SequenceBatcher) Infer(ctx context.Context, req *inference.Request) error {
	if req.BatchSize > 1 {
		return inference.InvalidArg("inference request to model '%s' must specify batch-size 1 due to requirements of sequence batcher", req.ModelName)
	}
	id, start, end := SequenceParams(req.Parameters)
	if id.IsZero() {
		return inference.InvalidArg("inference request to model '%s' must specify a non-zero or non-empty correlation ID", req.ModelName)
	}
	if c := s.corrid; c != nil {
		got := inference.Uint64
		if id.IsStr {
			got = inference.Bytes
		}
		if (got == inference.Bytes) != (c.DataType == inference.Bytes) {
			return inference.InvalidArg("sequence batching control '%s' data-type is '%s', but model '%s' expects '%s'", c.Name, got, req.ModelName, c.DataType)
		}
	}
	var timeout time.Duration
	if t, ok := req.Parameters.Int("timeout"); ok && t > 0 {
		timeout = time.Duration(t) * time.Microsecond
	}
	sr := &seqRequest{ctx: ctx, req: req, id: id, start: start, end: end, enqueued: time.Now(), done: make(chan struct{})}
	req.SetSender(&seqSender{ResponseSender: req.Sender(), s: s, sr: sr})
	if err := s.enqueue(sr, timeout); err != nil {
		return err
	}
	s.pending(1)
	if s.opts.Strategy == SequenceOldest {
		return s.runOldest(sr)
	}
	select {
	case <-sr.done:
	case <-ctx.Done():
		if s.dropIfQueued(sr) {
			return cancelled(ctx)
		}
		<-sr.done // already executing: the batch sees the cancellation
	}
	return sr.err
}

// enqueue routes sr to its sequence's slot or backlog queue.
func (s *SequenceBatcher) enqueue(sr *seqRequest, timeout time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return inference.Unavailable("model '%s' is unloading", sr.req.ModelName)
	}
	seq := s.active[sr.id]
	if seq == nil && !sr.start {
		return inference.InvalidArg("inference request for sequence %s to model '%s' must specify the START flag on the first request of the sequence",
			sr.id, sr.req.ModelName)
	}
	if seq != nil && sr.start {
		s.opts.Logger.Warn().Str("model", sr.req.ModelName).Stringer("sequence", sr.id).
			Msg("sequence has a conflict: the previous sequence did not end before this sequence start; the previous sequence is terminated early")
	}
	if seq == nil {
		seq = &sequence{id: sr.id}
		if !sr.end {
			s.active[sr.id] = seq
		}
		if slot := s.takeFreeSlotLocked(); slot != nil {
			s.assignLocked(slot, seq)
		} else {
			s.backlog = append(s.backlog, seq)
		}
	}
	seq.lastSeen = sr.enqueued
	sr.seq = seq
	if sr.end && s.active[sr.id] == seq {
		delete(s.active, sr.id)
	}
	if seq.slot != nil {
		seq.slot.queue = append(seq.slot.queue, sr)
		s.notifyLocked(seq.slot)
		return nil
	}
	seq.queue = append(seq.queue, sr)
	if timeout > 0 {
		if exp := sr.enqueued.Add(timeout); seq.expires.IsZero() || exp.Before(seq.expires) {
			seq.expires = exp
			s.wakeReaper()
		}
	}
	return nil
}

func (s *SequenceBatcher) takeFreeSlotLocked() *seqSlot {
	if len(s.free) == 0 {
		return nil
	}
	slot := s.free[0]
	s.free = slices.Delete(s.free, 0, 1)
	return slot
}

// assignLocked gives slot to seq, with a fresh state and the requests seq
// gathered in the backlog.
func (s *SequenceBatcher) assignLocked(slot *seqSlot, seq *sequence) {
	slot.seq = seq
	slot.state = nil
	seq.slot = slot
	slot.queue = append(slot.queue, seq.queue...)
	seq.queue = nil
	seq.expires = time.Time{}
	s.wakeReaper()
}

// releaseSlotLocked ends the slot's sequence and hands the slot to the
// oldest backlogged sequence, or frees it. It does not notify the slot's
// runner: callers are the runner or the reaper, which do.
func (s *SequenceBatcher) releaseSlotLocked(slot *seqSlot) {
	if old := slot.seq; old != nil {
		old.slot = nil
		if s.active[old.id] == old {
			delete(s.active, old.id)
		}
	}
	slot.seq = nil
	slot.state = nil
	if len(s.backlog) > 0 {
		seq := s.backlog[0]
		s.backlog = slices.Delete(s.backlog, 0, 1)
		// Its idle time counts from now: waiting for a slot is not idling.
		seq.lastSeen = time.Now()
		s.assignLocked(slot, seq)
		return
	}
	s.free = append(s.free, slot)
	// Keep the lowest rows first.
	slices.SortStableFunc(s.free, func(a, b *seqSlot) int {
		if a.index != b.index {
			return a.index - b.index
		}
		return a.runner.index - b.runner.index
	})
}

// notifyLocked tells whoever serves slot that its queue changed.
func (s *SequenceBatcher) notifyLocked(slot *seqSlot) {
	if s.opts.Strategy == SequenceOldest {
		s.dispatchLocked(slot)
		return
	}
	select {
	case slot.runner.wake <- struct{}{}:
	default:
	}
}

func (s *SequenceBatcher) wakeReaper() {
	select {
	case s.reaperWake <- struct{}{}:
	default:
	}
}

// dropIfQueued removes a request whose caller gave up, unless it already
// left its queue. It reports whether it removed it.
func (s *SequenceBatcher) dropIfQueued(sr *seqRequest) bool {
	s.mu.Lock()
	if sr.taken {
		s.mu.Unlock()
		return false
	}
	sr.taken = true
	seq := sr.seq
	// An END request left s.active when it was queued, so neither it nor
	// the idle reaper would free the sequence's slot any more: queue the
	// release in its place, after the requests before it.
	var marker *seqRequest
	if sr.end {
		marker = &seqRequest{release: true, seq: seq}
	}
	if slot := seq.slot; slot != nil {
		slot.queue = slices.DeleteFunc(slot.queue, func(x *seqRequest) bool { return x == sr })
		if marker != nil {
			slot.queue = append(slot.queue, marker)
			s.notifyLocked(slot)
		}
	} else {
		seq.queue = slices.DeleteFunc(seq.queue, func(x *seqRequest) bool { return x == sr })
		if marker != nil {
			seq.queue = append(seq.queue, marker)
		}
	}
	s.mu.Unlock()
	s.pending(-1)
	return true
}

// prepareLocked adds the control inputs and the implicit state to a
// request about to run in slot.
func (s *SequenceBatcher) prepareLocked(sr *seqRequest, slot *seqSlot) {
	sr.slot = slot
	for _, t := range s.controlTensors(sr.start, sr.end, true, sr.id) {
		setInput(sr.req, t)
	}
	if len(s.opts.States) == 0 {
		return
	}
	if sr.start || slot.state == nil {
		slot.state = make([]inference.Tensor, len(s.opts.States))
	}
	for i := range s.opts.States {
		t := slot.state[i]
		if t.Name == "" {
			t = s.initialState(i)
		}
		setInput(sr.req, t)
	}
}

// keepStateLocked keeps the state outputs of a response of a request that
// ran in its slot (the last response that carries them wins) and removes
// from the response the state outputs the model does not declare as
// outputs.
func (s *SequenceBatcher) keepStateLocked(sr *seqRequest, resp *inference.Response) {
	slot := sr.slot
	if slot != nil && !sr.end && slot.seq == sr.seq && slot.state != nil {
		for i, st := range s.opts.States {
			if out := resp.Output(st.OutputName); out != nil {
				// The output may alias request buffers the front end reuses.
				slot.state[i] = inference.Tensor{
					Name: st.InputName, DataType: out.DataType,
					Shape: slices.Clone(out.Shape), Data: slices.Clone(out.Data),
				}
			}
		}
	}
	if len(s.stateOutputs) > 0 {
		resp.Outputs = slices.DeleteFunc(slices.Clone(resp.Outputs), func(t inference.Tensor) bool { return s.stateOutputs[t.Name] })
	}
}

// Close refuses new requests, fails queued ones, and waits until every
// goroutine of the batcher has returned and nothing runs.
func (s *SequenceBatcher) Close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		var aborted []*seqRequest
		for _, r := range s.runners {
			for _, slot := range r.slots {
				for _, sr := range slot.queue {
					if !sr.release {
						aborted = append(aborted, sr)
					}
				}
				slot.queue = nil
			}
		}
		for _, seq := range s.backlog {
			for _, sr := range seq.queue {
				if !sr.release {
					aborted = append(aborted, sr)
				}
			}
			seq.queue = nil
		}
		s.backlog = nil
		clear(s.active)
		for _, sr := range aborted {
			sr.taken = true
		}
		s.mu.Unlock()
		for _, sr := range aborted {
			s.pending(-1)
			sr.err = inference.Unavailable("model '%s' was unloaded before the request ran", sr.req.ModelName)
			close(sr.done)
		}
		close(s.stop)
		s.wg.Wait()
		for _, r := range s.runners {
			if r.dyn != nil {
				r.dyn.Close()
			}
		}
	})
}

func (s *SequenceBatcher) pending(delta int) {
	if s.rec != nil {
		s.rec.Pending(delta)
	}
}

// reaper frees the slots of idle sequences and rejects backlogged
// sequences whose timeout passed. It sleeps until the next deadline.
func (s *SequenceBatcher) reaper() {
	defer s.wg.Done()
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		next := s.reap(time.Now())
		timerC := armTimer(&timer, next)
		select {
		case <-s.stop:
			return
		case <-s.reaperWake:
		case <-timerC:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// armTimer sets *timer (made on first use) to fire at next and returns
// its channel, or nil (blocks forever in a select) when next is zero.
func armTimer(timer **time.Timer, next time.Time) <-chan time.Time {
	if next.IsZero() {
		return nil
	}
	if *timer == nil {
		*timer = time.NewTimer(time.Until(next))
	} else {
		(*timer).Reset(time.Until(next))
	}
	return (*timer).C
}

// reap does one pass of the reaper and returns its next deadline.
func (s *SequenceBatcher) reap(now time.Time) time.Time {
	var (
		next    time.Time
		expired []*seqRequest
	)
	soonest := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	s.mu.Lock()
	for id, seq := range s.active {
		if seq.slot == nil {
			continue // backlogged: idle time counts once it has a slot
		}
		if seq.slot.awaiting != nil || seq.slot.busy {
			// A request of it is still answering (a decoupled step may
			// stream for long): the sequence is not idle. Its final
			// response restarts the idle time and wakes the reaper.
			continue
		}
		deadline := seq.lastSeen.Add(s.opts.MaxSequenceIdle)
		if now.Before(deadline) {
			soonest(deadline)
			continue
		}
		s.opts.Logger.Debug().Stringer("sequence", id).Msg("max sequence idle exceeded: freeing its slot")
		delete(s.active, id)
		// The slot is freed once the requests already queued have run.
		seq.slot.queue = append(seq.slot.queue, &seqRequest{release: true, seq: seq})
		s.notifyLocked(seq.slot)
	}
	kept := s.backlog[:0]
	for _, seq := range s.backlog {
		if seq.expires.IsZero() || now.Before(seq.expires) {
			if !seq.expires.IsZero() {
				soonest(seq.expires)
			}
			kept = append(kept, seq)
			continue
		}
		if s.active[seq.id] == seq {
			delete(s.active, seq.id)
		}
		for _, sr := range seq.queue {
			if !sr.release { // a dropped END's marker: the slot was never taken
				sr.taken = true
				expired = append(expired, sr)
			}
		}
		seq.queue = nil
	}
	clear(s.backlog[len(kept):])
	s.backlog = kept
	s.mu.Unlock()
	for _, sr := range expired {
		s.pending(-1)
		sr.err = inference.Unavailable("timeout of the corresponding sequence has been expired")
		close(sr.done)
	}
	return next
}

// allDone returns a context that ends when every one of ctxs has ended, so
// that one client going away does not abort the others of its batch.
func allDone(ctxs []context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu   sync.Mutex
		left = len(ctxs)
	)
	stops := make([]func() bool, len(ctxs))
	for i, c := range ctxs {
		stops[i] = context.AfterFunc(c, func() {
			mu.Lock()
			left--
			last := left == 0
			mu.Unlock()
			if last {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}
