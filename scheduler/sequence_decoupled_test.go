package scheduler

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/inference"
)

// seqStreamer is a decoupled stateful model: for each ready row it reads
// STATE_IN and IN, and from a goroutine sends the request's "n" responses
// (a request parameter), one every "gap_ms" (default 10ms) of virtual time,
// each with OUT = STATE_IN + IN. The final one carries the state,
// STATE_OUT = OUT; the others carry a decoy STATE_OUT (1000 + their index)
// that the next step must not see. With n = 0 it sends the final flag alone,
// after one gap, and no state. Padding rows get the final flag at once.
type seqStreamer struct {
	wg sync.WaitGroup // the rows' goroutines

	mu      sync.Mutex // guards batches
	batches [][]streamRow
}

var _ backends.Instance = executeFunc(nil)

// streamRow is what the seqStreamer saw in one batch row, and when.
type streamRow struct {
	id               string
	ready, state, in int32
	at               time.Duration // since the test's start
}

func int32Tensor(name string, v int32) inference.Tensor {
	return inference.Tensor{Name: name, DataType: inference.Int32, Shape: []int64{1, 1}, Data: binary.LittleEndian.AppendUint32(nil, uint32(v))}
}

func (m *seqStreamer) run(start time.Time) func(context.Context, []*inference.Request) error {
	return func(_ context.Context, batch []*inference.Request) error {
		rows := make([]streamRow, len(batch))
		for i, r := range batch {
			row := streamRow{id: r.ID, ready: i32(r.Input("READY")), state: i32(r.Input("STATE_IN")), in: i32(r.Input("IN")), at: time.Since(start)}
			rows[i] = row
			if row.ready != 1 {
				_ = r.Send(nil, true)
				continue
			}
			n, _ := r.Parameters.Int("n")
			gap := millisParam(r.Parameters, "gap_ms", 10*time.Millisecond)
			m.wg.Go(func() {
				sum := row.state + row.in
				if n == 0 {
					time.Sleep(gap)
					_ = r.Send(nil, true)
					return
				}
				for k := range int(n) {
					time.Sleep(gap)
					final := k == int(n)-1
					state := int32(1000 + k)
					if final {
						state = sum
					}
					resp := &inference.Response{ID: row.id, Outputs: []inference.Tensor{int32Tensor("OUT", sum), int32Tensor("STATE_OUT", state)}}
					if err := r.Send(resp, final); err != nil && !final {
						_ = r.Send(nil, true)
						return
					}
				}
			})
		}
		m.mu.Lock()
		m.batches = append(m.batches, rows)
		m.mu.Unlock()
		return nil
	}
}

// executeFunc is a backends.Instance written as a function.
type executeFunc func(context.Context, []*inference.Request) error

func (f executeFunc) Execute(ctx context.Context, batch []*inference.Request) error {
	return f(ctx, batch)
}

// readyRows returns the ready rows of every batch, in execution order.
func (m *seqStreamer) readyRows() []streamRow {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []streamRow
	for _, b := range m.batches {
		for _, r := range b {
			if r.ready == 1 {
				out = append(out, r)
			}
		}
	}
	return out
}

func seqStreamReq(id uint64, start, end bool, in int32, n int, name string) *inference.Request {
	r := seqReq(id, start, end, in)
	r.ID = name
	r.Parameters["n"] = int64(n)
	return r
}

// outs returns the OUT values of c's responses, and fails the test when
// one of them still carries the state output, which the model does not
// declare.
func outs(t *testing.T, c *collector) []int32 {
	t.Helper()
	resps, err := c.responses()
	if err != nil {
		t.Errorf("%s: %v", c.id, err)
	}
	var vs []int32
	for _, r := range resps {
		if r.Output("STATE_OUT") != nil {
			t.Errorf("%s: the state output reached the response", c.id)
		}
		vs = append(vs, i32(r.Output("OUT")))
	}
	return vs
}

// TestSequenceDecoupledState, both strategies: a sequence's next request
// runs only once the previous one's final response has been delivered (the
// client takes 1ms to read it), and sees the state that final response
// carried; a step that answers with the final flag alone moves the
// sequence on and keeps the state.
func TestSequenceDecoupledState(t *testing.T) {
	for _, strategy := range []SequenceStrategy{SequenceDirect, SequenceOldest} {
		bubble(t, fmt.Sprintf("strategy %d", strategy), func(t *testing.T) {
			start := time.Now()
			m := &seqStreamer{}
			opts := accumulatorOptions(1)
			opts.Strategy = strategy
			s := NewSequence([]backends.Instance{executeFunc(m.run(start))}, opts, nil)
			defer s.Close()
			ctx := context.Background()
			j := &journal{}
			steps := []struct {
				start, end bool
				in         int32
				n          int
			}{
				{true, false, 1, 3},  // runs at 0, responds at 10, 20, 30ms (read at 31); state 1
				{false, false, 2, 0}, // runs at 31, final flag alone at 41 (42); state stays 1
				{false, false, 4, 2}, // runs at 42, responds at 52, 62 (63); state 5
				{false, true, 8, 1},  // runs at 63, responds at 73 (74)
			}
			cs := make([]*collector, len(steps))
			returned := make([]time.Duration, len(steps))
			// The client sends each request as soon as Infer returned for
			// the previous one, before that one's final response.
			for i, st := range steps {
				r := seqStreamReq(1, st.start, st.end, st.in, st.n, fmt.Sprintf("s%d", i+1))
				cs[i] = collect(ctx, r, j)
				cs[i].finalDelay = time.Millisecond
				if err := s.Infer(ctx, r); err != nil {
					t.Fatalf("step %d: %v", i+1, err)
				}
				returned[i] = time.Since(start)
			}
			for _, c := range cs {
				c.wait()
				if err := c.check(); err != nil {
					t.Error(err)
				}
			}
			want := []streamRow{
				{id: "s1", ready: 1, state: 0, in: 1, at: 0},
				{id: "s2", ready: 1, state: 1, in: 2, at: 31 * time.Millisecond},
				{id: "s3", ready: 1, state: 1, in: 4, at: 42 * time.Millisecond},
				{id: "s4", ready: 1, state: 5, in: 8, at: 63 * time.Millisecond},
			}
			if got := m.readyRows(); !slices.Equal(got, want) {
				t.Errorf("rows\n got %+v\nwant %+v", got, want)
			}
			finals := map[string]time.Duration{}
			for _, d := range j.entries() {
				if d.final {
					finals[d.req] = d.at.Sub(start)
				}
			}
			for i := 1; i < len(want); i++ {
				if prev := finals[want[i-1].id]; want[i].at < prev {
					t.Errorf("%s ran at %v, before %s's final response at %v", want[i].id, want[i].at, want[i-1].id, prev)
				}
			}
			if !slices.Equal(returned, []time.Duration{0, 31 * time.Millisecond, 42 * time.Millisecond, 63 * time.Millisecond}) {
				t.Errorf("Infer returned at %v, want as each step's Execute returned", returned)
			}
			for i, want := range [][]int32{{1, 1, 1}, nil, {5, 5}, {13}} {
				if got := outs(t, cs[i]); !slices.Equal(got, want) {
					t.Errorf("s%d: OUT %v, want %v", i+1, got, want)
				}
			}
			// The END's final response freed the only slot.
			r := seqStreamReq(2, true, true, 7, 1, "other")
			c := collect(ctx, r, nil)
			if _, err := c.run(ctx, s); err != nil {
				t.Fatalf("a new sequence after the streamed END: %v", err)
			}
			if got := outs(t, c); !slices.Equal(got, []int32{7}) {
				t.Errorf("new sequence: OUT %v, want [7]: a fresh state", got)
			}
			m.wg.Wait()
		})
	}
}

// TestSequenceDirectStreamingSlotOnly: with the direct strategy a slot whose
// request still streams holds back only its own sequence: the other slots'
// requests run, behind a padding row in its place.
func TestSequenceDirectStreamingSlotOnly(t *testing.T) {
	bubble(t, "direct", func(t *testing.T) {
		start := time.Now()
		m := &seqStreamer{}
		s := NewSequence([]backends.Instance{executeFunc(m.run(start))}, accumulatorOptions(2), nil)
		defer s.Close()
		ctx := context.Background()
		slow := seqStreamReq(1, true, false, 1, 2, "slow")
		slow.Parameters["gap_ms"] = int64(50) // final at 100ms
		cs := []*collector{collect(ctx, slow, nil)}
		if err := s.Infer(ctx, slow); err != nil {
			t.Fatal(err)
		}
		for i, in := range []int32{10, 20} {
			r := seqStreamReq(2, i == 0, false, in, 1, fmt.Sprintf("fast%d", i+1))
			r.Parameters["gap_ms"] = int64(1)
			c := collect(ctx, r, nil)
			cs = append(cs, c)
			if _, err := c.run(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
		next := seqStreamReq(1, false, true, 2, 1, "slow2")
		cs = append(cs, collect(ctx, next, nil))
		if err := s.Infer(ctx, next); err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			c.wait()
		}
		m.mu.Lock()
		batches := slices.Clone(m.batches)
		m.mu.Unlock()
		want := [][]streamRow{
			{{id: "slow", ready: 1, state: 0, in: 1, at: 0}},
			{{ready: 0, state: 0, in: 0, at: 0}, {id: "fast1", ready: 1, state: 0, in: 10, at: 0}},
			{{ready: 0, state: 0, in: 0, at: time.Millisecond}, {id: "fast2", ready: 1, state: 10, in: 20, at: time.Millisecond}},
			{{id: "slow2", ready: 1, state: 1, in: 2, at: 100 * time.Millisecond}},
		}
		if len(batches) != len(want) {
			t.Fatalf("batches %+v, want %+v", batches, want)
		}
		for i := range want {
			if !slices.Equal(batches[i], want[i]) {
				t.Errorf("batch %d:\n got %+v\nwant %+v", i, batches[i], want[i])
			}
		}
		for i, want := range [][]int32{{1, 1}, {10}, {30}, {3}} {
			if got := outs(t, cs[i]); !slices.Equal(got, want) {
				t.Errorf("%s: OUT %v, want %v", cs[i].id, got, want)
			}
		}
		m.wg.Wait()
	})
}
