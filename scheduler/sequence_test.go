package scheduler

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/inference"
)

// seqRow is what the accumulator saw in one batch row.
type seqRow struct {
	id                string
	start, ready, end int32
	corrid            uint64
	state, in         int32
}

// accumulator is a stateful unary model in the style of Triton's sequence
// examples: OUT = STATE_IN + IN, and STATE_OUT = OUT. It logs every batch.
type accumulator struct {
	took time.Duration
	mu   *sync.Mutex
	log  *[][]seqRow
}

func i32(t *inference.Tensor) int32 {
	if t == nil || len(t.Data) < 4 {
		return -1
	}
	return int32(binary.LittleEndian.Uint32(t.Data))
}

func (a *accumulator) ExecuteWithPhases(ctx context.Context, batch []*inference.Request) ([]*inference.Response, backends.Phases, error) {
	rows := make([]seqRow, len(batch))
	out := make([]*inference.Response, len(batch))
	for i, r := range batch {
		row := seqRow{
			id: r.ID, start: i32(r.Input("START")), ready: i32(r.Input("READY")), end: i32(r.Input("END")),
			state: i32(r.Input("STATE_IN")), in: i32(r.Input("IN")),
		}
		if c := r.Input("CORRID"); c != nil && c.DataType == inference.Uint64 {
			row.corrid = binary.LittleEndian.Uint64(c.Data)
		}
		rows[i] = row
		sum := row.state + row.in
		if row.ready == 0 {
			sum = 0
		}
		data := binary.LittleEndian.AppendUint32(nil, uint32(sum))
		out[i] = &inference.Response{ID: r.ID, Outputs: []inference.Tensor{
			{Name: "OUT", DataType: inference.Int32, Shape: []int64{1, 1}, Data: data},
			{Name: "STATE_OUT", DataType: inference.Int32, Shape: []int64{1, 1}, Data: data},
		}}
	}
	a.mu.Lock()
	*a.log = append(*a.log, rows)
	a.mu.Unlock()
	if a.took > 0 {
		select {
		case <-time.After(a.took):
		case <-ctx.Done():
			return nil, backends.Phases{}, ctx.Err()
		}
	}
	return out, backends.Phases{}, nil
}

func int32Control(name string, kind ControlKind) SequenceControl {
	return SequenceControl{
		Name: name, Kind: kind, DataType: inference.Int32,
		False: binary.LittleEndian.AppendUint32(nil, 0), True: binary.LittleEndian.AppendUint32(nil, 1),
	}
}

func accumulatorOptions(maxBatch int) SequenceOptions {
	return SequenceOptions{
		MaxBatchSize: maxBatch,
		Controls: []SequenceControl{
			int32Control("START", ControlStart),
			int32Control("READY", ControlReady),
			int32Control("END", ControlEnd),
			{Name: "CORRID", Kind: ControlCorrID, DataType: inference.Uint64},
		},
		States: []SequenceState{{
			InputName: "STATE_IN", OutputName: "STATE_OUT", DataType: inference.Int32, Shape: []int64{1},
		}},
		ModelOutputs: map[string]bool{"OUT": true},
	}
}

// seqHarness runs a SequenceBatcher over accumulators in a synctest bubble.
type seqHarness struct {
	t   *testing.T
	s   *SequenceBatcher
	rec *recorder
	mu  sync.Mutex
	log [][]seqRow
}

func newSeqHarness(t *testing.T, instances int, took time.Duration, opts SequenceOptions) *seqHarness {
	h := &seqHarness{t: t, rec: &recorder{}}
	insts := make([]backends.Instance, instances)
	for i := range insts {
		insts[i] = backends.Unary(&accumulator{took: took, mu: &h.mu, log: &h.log})
	}
	h.s = NewSequence(insts, opts, h.rec)
	return h
}

func seqReq(id any, start, end bool, in int32) *inference.Request {
	p := inference.Parameters{"sequence_id": id}
	if start {
		p["sequence_start"] = true
	}
	if end {
		p["sequence_end"] = true
	}
	return &inference.Request{
		ID: fmt.Sprintf("%v:%d", id, in), ModelName: "acc", BatchSize: 1, Parameters: p,
		Inputs: []inference.Tensor{{Name: "IN", DataType: inference.Int32, Shape: []int64{1, 1}, Data: binary.LittleEndian.AppendUint32(nil, uint32(in))}},
	}
}

// infer runs one request and returns OUT, failing the test on error.
func (h *seqHarness) infer(r *inference.Request) int32 {
	h.t.Helper()
	resp, err := infer(context.Background(), h.s, r)
	if err != nil {
		h.t.Fatalf("%s: %v", r.ID, err)
	}
	if resp.Output("STATE_OUT") != nil {
		h.t.Errorf("%s: the state output reached the response", r.ID)
	}
	return i32(resp.Output("OUT"))
}

func (h *seqHarness) batches() [][]seqRow {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.log)
}

func TestSequenceDirectControlsAndState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newSeqHarness(t, 1, 0, accumulatorOptions(2))
		defer h.s.Close()
		steps := []struct {
			id         uint64
			start, end bool
			in, want   int32
		}{
			{1, true, false, 1, 1},
			{2, true, false, 10, 10},
			{1, false, false, 2, 3},
			{2, false, false, 20, 30},
			{1, false, true, 3, 6},
			{2, false, true, 30, 60},
		}
		for _, st := range steps {
			if got := h.infer(seqReq(st.id, st.start, st.end, st.in)); got != st.want {
				t.Fatalf("sequence %d input %d: OUT %d, want %d", st.id, st.in, got, st.want)
			}
		}
		b := h.batches()
		if len(b) != len(steps) {
			t.Fatalf("%d batches, want %d", len(b), len(steps))
		}
		// Sequence 1 holds batch row 0, sequence 2 row 1: a request of
		// sequence 2 alone runs behind a not-ready padding row.
		want := [][]seqRow{
			{{id: "1:1", start: 1, ready: 1, end: 0, corrid: 1, state: 0, in: 1}},
			{{ready: 0, start: 0, end: 0, corrid: 0}, {id: "2:10", start: 1, ready: 1, corrid: 2, state: 0, in: 10}},
			{{id: "1:2", ready: 1, corrid: 1, state: 1, in: 2}},
			{{ready: 0}, {id: "2:20", ready: 1, corrid: 2, state: 10, in: 20}},
			{{id: "1:3", ready: 1, end: 1, corrid: 1, state: 3, in: 3}},
			{{ready: 0}, {id: "2:30", ready: 1, end: 1, corrid: 2, state: 30, in: 30}},
		}
		for i := range want {
			if !slices.Equal(b[i], want[i]) {
				t.Errorf("batch %d:\n got %+v\nwant %+v", i, b[i], want[i])
			}
		}
		if len(h.rec.executed) != len(steps) {
			t.Errorf("%d executions recorded, want %d", len(h.rec.executed), len(steps))
		}
	})
}

func TestSequenceDirectBatchesConcurrentSequences(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newSeqHarness(t, 1, 10*time.Millisecond, accumulatorOptions(4))
		defer h.s.Close()
		var wg sync.WaitGroup
		for id := uint64(1); id <= 4; id++ {
			wg.Go(func() {
				total := int32(0)
				for step := range 3 {
					in := int32(id*100) + int32(step)
					total += in
					if got := h.infer(seqReq(id, step == 0, step == 2, in)); got != total {
						t.Errorf("sequence %d step %d: OUT %d, want %d", id, step, got, total)
					}
				}
			})
		}
		wg.Wait()
		rows, most := 0, 0
		b := h.batches()
		for _, batch := range b {
			seen := map[uint64]bool{}
			for _, r := range batch {
				if r.ready == 0 {
					continue
				}
				if seen[r.corrid] {
					t.Errorf("sequence %d twice in one batch", r.corrid)
				}
				seen[r.corrid] = true
			}
			rows += len(seen)
			most = max(most, len(seen))
		}
		// Which requests share the first batch depends on goroutine start
		// order; from then on the queued steps of different sequences must
		// run together.
		if rows != 12 || most < 2 || len(b) >= 12 {
			t.Errorf("%d requests in %d batches, at most %d together; want 12 requests batched: %+v", rows, len(b), most, b)
		}
	})
}

func TestSequenceDirectSlotRowsAreStable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newSeqHarness(t, 1, 0, accumulatorOptions(3))
		defer h.s.Close()
		h.infer(seqReq(uint64(7), true, false, 1)) // row 0
		h.infer(seqReq(uint64(8), true, false, 1)) // row 1
		h.infer(seqReq(uint64(9), true, false, 1)) // row 2
		h.infer(seqReq(uint64(8), false, true, 1)) // row 1 ends: frees it
		h.infer(seqReq(uint64(5), true, false, 1)) // takes row 1, the lowest free
		h.infer(seqReq(uint64(9), false, false, 1))
		b := h.batches()
		rowOf := func(batch []seqRow, corrid uint64) int {
			for i, r := range batch {
				if r.ready == 1 && r.corrid == corrid {
					return i
				}
			}
			return -1
		}
		for i, want := range []struct {
			corrid uint64
			row    int
		}{{7, 0}, {8, 1}, {9, 2}, {8, 1}, {5, 1}, {9, 2}} {
			if got := rowOf(b[i], want.corrid); got != want.row {
				t.Errorf("batch %d: sequence %d in row %d, want %d (%+v)", i, want.corrid, got, want.row, b[i])
			}
		}
	})
}

func TestSequenceErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newSeqHarness(t, 1, 0, accumulatorOptions(2))
		defer h.s.Close()
		ctx := context.Background()
		check := func(r *inference.Request, code inference.Code, text string) {
			t.Helper()
			_, err := infer(ctx, h.s, r)
			if err == nil || inference.CodeOf(err) != code || err.Error() != text {
				t.Errorf("%s: error %v (%v), want %v %q", r.ID, err, inference.CodeOf(err), code, text)
			}
		}
		check(seqReq(uint64(3), false, false, 1), inference.CodeInvalidArg,
			"inference request for sequence 3 to model 'acc' must specify the START flag on the first request of the sequence")
		check(seqReq(uint64(0), true, false, 1), inference.CodeInvalidArg,
			"inference request to model 'acc' must specify a non-zero or non-empty correlation ID")
		check(seqReq("", true, false, 1), inference.CodeInvalidArg,
			"inference request to model 'acc' must specify a non-zero or non-empty correlation ID")
		check(seqReq("abc", true, false, 1), inference.CodeInvalidArg,
			"sequence batching control 'CORRID' data-type is 'BYTES', but model 'acc' expects 'UINT64'")
		big := seqReq(uint64(4), true, false, 1)
		big.BatchSize = 2
		check(big, inference.CodeInvalidArg, "inference request to model 'acc' must specify batch-size 1 due to requirements of sequence batcher")

		// After END the ID is unknown again.
		h.infer(seqReq(uint64(3), true, true, 1))
		check(seqReq(uint64(3), false, false, 1), inference.CodeInvalidArg,
			"inference request for sequence 3 to model 'acc' must specify the START flag on the first request of the sequence")
	})
}

func TestSequenceStartOnBusyIDRestarts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newSeqHarness(t, 1, 0, accumulatorOptions(2))
		defer h.s.Close()
		for _, st := range []struct {
			start bool
			in    int32
			want  int32
		}{{true, 5, 5}, {false, 7, 12}, {true, 1, 1}, {false, 2, 3}} {
			if got := h.infer(seqReq(uint64(1), st.start, false, st.in)); got != st.want {
				t.Fatalf("input %d: OUT %d, want %d", st.in, got, st.want)
			}
		}
		// The restarted sequence kept its slot.
		for i, b := range h.batches() {
			if b[0].corrid != 1 || b[0].ready != 1 {
				t.Errorf("batch %d: %+v, want sequence 1 in row 0", i, b)
			}
		}
	})
}

func TestSequenceStringIDs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		opts := accumulatorOptions(2)
		opts.Controls[3] = SequenceControl{Name: "CORRID", Kind: ControlCorrID, DataType: inference.Bytes}
		h := newSeqHarness(t, 1, 0, opts)
		defer h.s.Close()
		h.infer(seqReq("a", true, false, 1))
		h.infer(seqReq("b", true, false, 10))
		if got := h.infer(seqReq("a", false, true, 2)); got != 3 {
			t.Fatalf("sequence a: OUT %d, want 3", got)
		}
		if got := h.infer(seqReq("b", false, true, 20)); got != 30 {
			t.Fatalf("sequence b: OUT %d, want 30", got)
		}
		_, err := infer(context.Background(), h.s, seqReq(uint64(5), true, false, 1))
		if err == nil || err.Error() != "sequence batching control 'CORRID' data-type is 'UINT64', but model 'acc' expects 'BYTES'" {
			t.Fatalf("uint64 ID on a string CORRID: %v", err)
		}
	})
}

// TestSequenceIdleFreesSlot: one slot; an abandoned sequence holds it until
// max_sequence_idle passes, then a backlogged sequence gets it and the
// abandoned ID is unknown.
func TestSequenceIdleFreesSlot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		opts := accumulatorOptions(0)
		opts.MaxSequenceIdle = 100 * time.Millisecond
		h := newSeqHarness(t, 1, 0, opts)
		defer h.s.Close()
		start := time.Now()
		h.infer(seqReq(uint64(1), true, false, 1)) // never ends
		if got := h.infer(seqReq(uint64(2), true, false, 5)); got != 5 {
			t.Fatalf("backlogged sequence: OUT %d, want 5 (a fresh state)", got)
		}
		if waited := time.Since(start); waited != 100*time.Millisecond {
			t.Errorf("the backlogged sequence ran after %v, want the idle time 100ms", waited)
		}
		_, err := infer(context.Background(), h.s, seqReq(uint64(1), false, false, 1))
		if err == nil || !strings.Contains(err.Error(), "must specify the START flag") {
			t.Fatalf("request for the reaped sequence: %v, want the START error", err)
		}
		// Activity keeps a sequence alive.
		for range 5 {
			time.Sleep(60 * time.Millisecond)
			h.infer(seqReq(uint64(2), false, false, 1))
		}
	})
}

func TestSequenceBacklogTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newSeqHarness(t, 1, 0, accumulatorOptions(0))
		defer h.s.Close()
		h.infer(seqReq(uint64(1), true, false, 1)) // holds the only slot for 1 s
		r := seqReq(uint64(2), true, false, 1)
		r.Parameters["timeout"] = uint64(50_000)
		start := time.Now()
		_, err := infer(context.Background(), h.s, r)
		if err == nil || inference.CodeOf(err) != inference.CodeUnavailable || err.Error() != "timeout of the corresponding sequence has been expired" {
			t.Fatalf("error %v, want the sequence timeout", err)
		}
		if d := time.Since(start); d != 50*time.Millisecond {
			t.Errorf("rejected after %v, want 50ms", d)
		}
	})
}

func TestSequenceCancelledWhileQueued(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newSeqHarness(t, 1, 0, accumulatorOptions(0))
		defer h.s.Close()
		h.infer(seqReq(uint64(1), true, false, 1))
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		_, err := infer(ctx, h.s, seqReq(uint64(2), true, false, 1)) // backlogged
		if inference.CodeOf(err) != inference.CodeCancelled {
			t.Fatalf("error %v, want cancelled", err)
		}
		if h.rec.pending != 0 {
			t.Errorf("pending gauge %d after the cancelled request left, want 0", h.rec.pending)
		}
	})
}

func TestSequenceMinimumSlotUtilization(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		opts := accumulatorOptions(2)
		opts.MaxQueueDelay = 100 * time.Millisecond
		opts.MinimumSlotUtilization = 1
		h := newSeqHarness(t, 1, 0, opts)
		defer h.s.Close()
		start := time.Now()
		h.infer(seqReq(uint64(1), true, false, 1))
		if d := time.Since(start); d != 100*time.Millisecond {
			t.Fatalf("a half-full batch ran after %v, want the 100ms delay", d)
		}
		// Both slots busy: the batch runs at once.
		var wg sync.WaitGroup
		start = time.Now()
		wg.Go(func() { h.infer(seqReq(uint64(1), false, false, 1)) })
		wg.Go(func() { h.infer(seqReq(uint64(2), true, false, 1)) })
		wg.Wait()
		if d := time.Since(start); d != 0 {
			t.Errorf("a full batch waited %v", d)
		}
	})
}

func TestSequenceOldest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		opts := accumulatorOptions(4)
		opts.Strategy = SequenceOldest
		opts.MaxCandidateSequences = 6
		opts.MaxQueueDelay = 5 * time.Millisecond
		h := newSeqHarness(t, 1, 10*time.Millisecond, opts)
		defer h.s.Close()
		var wg sync.WaitGroup
		for id := uint64(1); id <= 6; id++ {
			wg.Go(func() {
				total := int32(0)
				for step := range 4 {
					in := int32(id*100) + int32(step)
					total += in
					if got := h.infer(seqReq(id, step == 0, step == 3, in)); got != total {
						t.Errorf("sequence %d step %d: OUT %d, want %d", id, step, got, total)
					}
				}
			})
		}
		wg.Wait()
		rows, maxSize := 0, 0
		for _, b := range h.batches() {
			seen := map[uint64]bool{}
			for _, r := range b {
				if r.ready != 1 {
					t.Errorf("oldest strategy sent a padding row: %+v", b)
				}
				if seen[r.corrid] {
					t.Errorf("sequence %d twice in one batch", r.corrid)
				}
				seen[r.corrid] = true
			}
			rows += len(b)
			maxSize = max(maxSize, len(b))
		}
		if rows != 24 {
			t.Errorf("%d rows executed, want 24", rows)
		}
		if maxSize != 4 {
			t.Errorf("largest batch %d, want max_batch_size 4", maxSize)
		}
	})
}

type countingGate struct {
	mu       sync.Mutex
	acquired map[int]int
	held     int
}

func (g *countingGate) Acquire(_ context.Context, i int) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.acquired[i]++
	g.held++
	return nil
}

func (g *countingGate) Release(int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.held--
}

func TestSequenceUsesGate(t *testing.T) {
	for _, strategy := range []SequenceStrategy{SequenceDirect, SequenceOldest} {
		bubble(t, fmt.Sprintf("strategy %d", strategy), func(t *testing.T) {
			g := &countingGate{acquired: map[int]int{}}
			opts := accumulatorOptions(1)
			opts.Strategy = strategy
			opts.Gate = g
			h := newSeqHarness(t, 2, 0, opts)
			h.infer(seqReq(uint64(1), true, false, 1)) // instance 0
			h.infer(seqReq(uint64(2), true, false, 1)) // instance 1
			h.infer(seqReq(uint64(2), false, true, 1))
			h.s.Close()
			if g.acquired[0] != 1 || g.acquired[1] != 2 || g.held != 0 {
				t.Errorf("strategy %d: gate %+v, want instance 0 once, instance 1 twice, nothing held", strategy, g)
			}
		})
	}
}

func TestSequenceCloseFailsQueued(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newSeqHarness(t, 1, 0, accumulatorOptions(0))
		h.infer(seqReq(uint64(1), true, false, 1))
		errc := make(chan error, 1)
		go func() {
			_, err := infer(context.Background(), h.s, seqReq(uint64(2), true, false, 1)) // backlogged
			errc <- err
		}()
		synctest.Wait()
		h.s.Close()
		if err := <-errc; inference.CodeOf(err) != inference.CodeUnavailable {
			t.Fatalf("queued request: %v, want unavailable", err)
		}
		if _, err := infer(context.Background(), h.s, seqReq(uint64(3), true, false, 1)); inference.CodeOf(err) != inference.CodeUnavailable {
			t.Fatalf("request after Close: %v, want unavailable", err)
		}
	})
}

// failing is a unary instance whose every execution fails.
type failing struct{}

func (failing) ExecuteWithPhases(context.Context, []*inference.Request) ([]*inference.Response, backends.Phases, error) {
	return nil, backends.Phases{}, errors.New("boom")
}

func TestSequenceFailedBatchKeepsState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := NewSequence([]backends.Instance{backends.Unary(failing{})}, accumulatorOptions(0), nil)
		defer s.Close()
		if _, err := infer(context.Background(), s, seqReq(uint64(1), true, false, 1)); err == nil || err.Error() != "boom" {
			t.Fatalf("error %v, want the backend's", err)
		}
		// The sequence started anyway: a continuation is accepted.
		if _, err := infer(context.Background(), s, seqReq(uint64(1), false, true, 1)); err == nil || err.Error() != "boom" {
			t.Fatalf("error %v, want the backend's", err)
		}
	})
}

// A sequence's END request that is cancelled while queued must still free
// the slot: the sequence left the active set when the END was queued, so
// the idle reaper no longer looks at it.
func TestSequenceCancelledEndFreesSlot(t *testing.T) {
	for _, strategy := range []SequenceStrategy{SequenceDirect, SequenceOldest} {
		for _, backlogged := range []bool{false, true} {
			bubble(t, fmt.Sprintf("strategy %d, backlogged %v", strategy, backlogged), func(t *testing.T) {
				opts := accumulatorOptions(0) // one slot
				opts.Strategy = strategy
				h := newSeqHarness(t, 1, 10*time.Millisecond, opts)
				defer h.s.Close()
				name := fmt.Sprintf("strategy %d, backlogged %v", strategy, backlogged)

				// Sequence 1 holds the only slot, its START running.
				startErr := make(chan error, 1)
				go func() {
					_, err := infer(context.Background(), h.s, seqReq(uint64(1), true, false, 1))
					startErr <- err
				}()
				synctest.Wait()
				// The END of sequence 1 (or, backlogged, the whole of
				// sequence 2) waits and its caller gives up.
				var r *inference.Request
				if backlogged {
					r = seqReq(uint64(2), true, true, 1)
				} else {
					r = seqReq(uint64(1), false, true, 2)
				}
				ctx, cancel := context.WithCancel(context.Background())
				errc := make(chan error, 1)
				go func() {
					_, err := infer(ctx, h.s, r)
					errc <- err
				}()
				synctest.Wait()
				cancel()
				if err := <-errc; inference.CodeOf(err) != inference.CodeCancelled {
					t.Fatalf("%s: cancelled END: %v, want cancelled", name, err)
				}
				if err := <-startErr; err != nil {
					t.Fatalf("%s: START: %v", name, err)
				}
				if backlogged {
					h.infer(seqReq(uint64(1), false, true, 2))
				}
				// The slot is free again for a new sequence.
				ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				resp, err := infer(ctx, h.s, seqReq(uint64(3), true, true, 7))
				if err != nil {
					t.Fatalf("%s: new sequence after the cancelled END: %v", name, err)
				}
				if got := i32(resp.Output("OUT")); got != 7 {
					t.Errorf("%s: OUT %d, want 7", name, got)
				}
			})
		}
	}
}

// A backlogged sequence whose END was cancelled and whose other request
// times out is rejected without tripping over the END's slot release.
func TestSequenceBacklogTimeoutAfterCancelledEnd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newSeqHarness(t, 1, 0, accumulatorOptions(0))
		defer h.s.Close()
		h.infer(seqReq(uint64(1), true, false, 1)) // holds the only slot for 1 s
		first := seqReq(uint64(2), true, false, 1)
		first.Parameters["timeout"] = uint64(50_000)
		errc := make(chan error, 1)
		go func() {
			_, err := infer(context.Background(), h.s, first)
			errc <- err
		}()
		synctest.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		if _, err := infer(ctx, h.s, seqReq(uint64(2), false, true, 2)); inference.CodeOf(err) != inference.CodeCancelled {
			t.Fatalf("END: %v, want cancelled", err)
		}
		if err := <-errc; err == nil || err.Error() != "timeout of the corresponding sequence has been expired" {
			t.Fatalf("START: %v, want the sequence timeout", err)
		}
		if h.rec.pending != 0 {
			t.Errorf("pending gauge %d, want 0", h.rec.pending)
		}
	})
}
