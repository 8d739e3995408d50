package scheduler

import (
	"context"
	"slices"
	"time"

	"github.com/nereid-project/nereid/inference"
)

// directRow is one batch row: a request, or padding for an idle slot.
type directRow struct {
	sr  *seqRequest // nil for padding
	req *inference.Request
}

// directLoop is the batcher goroutine of one instance (direct strategy).
// It runs one batch at a time: the instance executes a batch, then the next
// one is formed from what the slots hold.
func (s *SequenceBatcher) directLoop(r *seqRunner) {
	defer s.wg.Done()
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		s.mu.Lock()
		rows, next := s.formDirectLocked(r, time.Now())
		s.mu.Unlock()
		if rows != nil {
			s.runDirect(r, rows)
			continue
		}
		timerC := armTimer(&timer, next)
		select {
		case <-s.stop:
			return
		case <-r.wake:
		case <-timerC:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// formDirectLocked takes the next request of every slot of r into a batch
// whose row i is slot i, up to the highest slot with a request, padding the
// others. With max_queue_delay_microseconds and minimum_slot_utilization
// set, it waits (returning when to look again) until enough slots have a
// request or the oldest request has waited the delay.
func (s *SequenceBatcher) formDirectLocked(r *seqRunner, now time.Time) ([]directRow, time.Time) {
	if s.closed {
		return nil, time.Time{}
	}
	var (
		highest  = -1
		ready    int
		earliest time.Time
		rep      *seqRequest
	)
	for i, slot := range r.slots {
		for len(slot.queue) > 0 && slot.queue[0].release {
			marker := slot.queue[0]
			slot.queue = slices.Delete(slot.queue, 0, 1)
			if slot.seq == marker.seq {
				s.releaseSlotLocked(slot)
			}
		}
		if len(slot.queue) == 0 || slot.awaiting != nil {
			continue
		}
		head := slot.queue[0]
		if rep == nil {
			rep = head
		}
		if earliest.IsZero() || head.enqueued.Before(earliest) {
			earliest = head.enqueued
		}
		ready++
		highest = i
	}
	if highest < 0 {
		return nil, time.Time{}
	}
	if delay := s.opts.MaxQueueDelay; delay > 0 && s.opts.MinimumSlotUtilization > 0 {
		utilization := float64(ready) / float64(len(r.slots))
		if now.Sub(earliest) < delay && utilization < s.opts.MinimumSlotUtilization {
			return nil, earliest.Add(delay)
		}
	}
	repInputs := slices.Clone(rep.req.Inputs) // before its controls and state are added
	rows := make([]directRow, highest+1)
	for i := 0; i <= highest; i++ {
		slot := r.slots[i]
		if len(slot.queue) == 0 || slot.awaiting != nil || !sameShapes(repInputs, slot.queue[0].req.Inputs, s.opts.RaggedInputs) {
			continue // padding, filled below
		}
		sr := slot.queue[0]
		slot.queue = slices.Delete(slot.queue, 0, 1)
		sr.taken = true
		slot.awaiting = sr
		s.prepareLocked(sr, slot)
		rows[i] = directRow{sr: sr, req: sr.req}
		if sr.end {
			// The sequence ends with this request: a backlogged sequence
			// may take the slot for the next batch.
			s.releaseSlotLocked(slot)
		}
	}
	for i := range rows {
		if rows[i].sr == nil {
			rows[i].req = s.nullRequest(rep.req, repInputs)
		}
	}
	return rows, time.Time{}
}

// runDirect executes one batch on r's instance and completes its requests.
func (s *SequenceBatcher) runDirect(r *seqRunner, rows []directRow) {
	reqs := make([]*inference.Request, len(rows))
	var ctxs []context.Context
	for i, row := range rows {
		reqs[i] = row.req
		if row.sr != nil {
			ctxs = append(ctxs, row.sr.ctx)
			s.pending(-1)
		}
	}
	ctx, cancel := allDone(ctxs)
	defer cancel()
	err := s.execute(ctx, r, reqs)
	for _, row := range rows {
		if row.sr == nil {
			continue
		}
		if err != nil {
			row.sr.err = err
			s.finished(row.sr)
		}
		close(row.sr.done)
	}
}

// finished records that a request that ran had its final response (or
// failed): its slot may run the sequence's next request, or, with the
// oldest strategy, the slot's END frees it.
func (s *SequenceBatcher) finished(sr *seqRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sr.finished || sr.slot == nil {
		return
	}
	sr.finished = true
	slot := sr.slot
	if slot.seq == sr.seq {
		sr.seq.lastSeen = time.Now() // idle from its last answer
		s.wakeReaper()
	}
	if s.opts.Strategy == SequenceOldest {
		slot.busy = false
		if sr.end && slot.seq == sr.seq {
			s.releaseSlotLocked(slot)
		}
		if !s.closed {
			s.dispatchLocked(slot)
		}
		return
	}
	if slot.awaiting == sr {
		slot.awaiting = nil
		select {
		case slot.runner.wake <- struct{}{}:
		default:
		}
	}
}

// execute runs a batch on r's instance, through the gate when there is
// one, and records the execution when it succeeds.
func (s *SequenceBatcher) execute(ctx context.Context, r *seqRunner, reqs []*inference.Request) error {
	if err := acquireGate(ctx, s.opts.Gate, r.index); err != nil {
		return err
	}
	if g := s.opts.Gate; g != nil {
		defer g.Release(r.index)
	}
	exec, err := ExecuteBatch(ctx, r.inst, reqs)
	if err == nil && s.rec != nil {
		s.rec.Executed(exec)
	}
	return err
}

// runOldest waits for sr's turn in its slot (the previous request of its
// sequence has had its final response), then hands it to the instance's
// dynamic batcher.
func (s *SequenceBatcher) runOldest(sr *seqRequest) error {
	select {
	case <-sr.done:
	case <-sr.ctx.Done():
		if s.dropIfQueued(sr) {
			return cancelled(sr.ctx)
		}
		<-sr.done
	}
	if sr.err != nil {
		return sr.err // refused while queued (unload, backlog timeout)
	}
	s.pending(-1)
	err := sr.slot.runner.dyn.Infer(sr.ctx, sr.req)
	if err != nil {
		s.finished(sr)
	}
	return err
}

// dispatchLocked gives the turn to the next request of an idle candidate
// slot (oldest strategy), freeing the slot on an idle marker.
func (s *SequenceBatcher) dispatchLocked(slot *seqSlot) {
	for !slot.busy && len(slot.queue) > 0 {
		sr := slot.queue[0]
		slot.queue = slices.Delete(slot.queue, 0, 1)
		if sr.release {
			if slot.seq == sr.seq {
				s.releaseSlotLocked(slot)
			}
			continue
		}
		sr.taken = true
		slot.busy = true
		s.prepareLocked(sr, slot)
		close(sr.done)
	}
}
