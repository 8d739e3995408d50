// Package backendtest drives backend instances outside a server, for the
// tests of backends: it loads a model configuration, builds an instance,
// and gives requests a response path that records what the instance sends
// and checks the inference.ResponseSender contract.
package backendtest

import (
	"context"
	"encoding/binary"
	"math"
	"os"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/prototext"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// Collect runs batch on inst: it gives every request a response path that
// keeps its responses, and returns them per request once every request has
// had its final flag (or ctx ended). The first error of a request, or Execute's, is
// returned with the responses gathered so far.
func Collect(ctx context.Context, inst backends.Instance, batch []*inference.Request) ([][]*inference.Response, error) {
	sinks := make([]*collector, len(batch))
	var wg sync.WaitGroup
	for i, r := range batch {
		sinks[i] = &collector{ctx: ctx, done: wg.Done}
		wg.Add(1)
		r.SetSender(sinks[i])
	}
	if err := inst.Execute(ctx, batch); err != nil {
		for _, s := range sinks {
			s.Fail(err)
		}
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-ctx.Done():
		for _, s := range sinks {
			s.Fail(inference.Errorf(inference.CodeCancelled, "request cancelled: %v", ctx.Err()))
		}
		<-finished
	}
	out := make([][]*inference.Response, len(batch))
	var first error
	for i, s := range sinks {
		s.mu.Lock()
		out[i] = s.resps
		if s.err != nil && first == nil {
			first = s.err
		}
		s.mu.Unlock()
	}
	return out, first
}

// collector is Collect's response path for one request.
type collector struct {
	ctx  context.Context //nolint:containedctx // Collect's context, for Cancelled
	done func()

	mu    sync.Mutex // guards the fields below
	resps []*inference.Response
	err   error
	final bool
}

func (c *collector) Send(resp *inference.Response, final bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.final {
		return inference.Internal("response sent after the final response")
	}
	if resp != nil {
		c.resps = append(c.resps, resp)
	}
	if final {
		c.final = true
		c.done()
	}
	if c.ctx.Err() != nil {
		return inference.Errorf(inference.CodeCancelled, "request cancelled")
	}
	return nil
}

func (c *collector) Fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.final {
		return
	}
	c.final, c.err = true, err
	c.done()
}

func (c *collector) Cancelled() bool { return c.ctx.Err() != nil }

// Config reads a config.pbtxt file.
func Config(t testing.TB, path string) *inferencepb.ModelConfig {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &inferencepb.ModelConfig{}
	if err := prototext.Unmarshal(data, cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Instance loads cfg with b and builds one instance of it, closed when the
// test ends.
func Instance(t testing.TB, b backends.Backend, cfg *inferencepb.ModelConfig) backends.Instance {
	t.Helper()
	m, err := b.Load(context.Background(), backends.ModelSpec{Name: cfg.GetName(), Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	inst, err := m.NewInstance(context.Background(), backends.InstanceSpec{Name: cfg.GetName() + "_0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Close(t, inst) })
	return inst
}

// Close closes an instance that is a backends.Closer; a second Close of
// the same instance must be harmless.
func Close(t testing.TB, inst backends.Instance) {
	t.Helper()
	if c, ok := inst.(backends.Closer); ok {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	}
}

// Event is one call a Recorder received.
type Event struct {
	At    time.Duration // since the recorder was made (virtual time in a synctest bubble)
	Resp  *inference.Response
	Final bool
	Err   error // Fail's error
}

// Recorder is a response path that records every call with its time and
// checks the ResponseSender contract (nothing after the final flag, no
// response-less Send without it). It reports the request cancelled after
// CancelAfter responses when that is positive — through Send's error
// alone when SendErrorOnly is set, else also through Cancelled — and makes
// each Send of a response wait for Gate when it is not nil (a client that
// reads slowly). Set the fields before the instance runs.
type Recorder struct {
	CancelAfter   int
	SendErrorOnly bool
	Gate          chan struct{}
	// Finished is closed at the final flag (or Fail).
	Finished chan struct{}

	t     testing.TB
	start time.Time

	mu        sync.Mutex // guards the fields below
	events    []Event
	sent      int
	cancelled bool
	final     bool
}

// NewRecorder makes a Recorder the response path of req.
func NewRecorder(t testing.TB, req *inference.Request) *Recorder {
	r := &Recorder{t: t, start: time.Now(), Finished: make(chan struct{})}
	req.SetSender(r)
	return r
}

// Send records a response (inference.ResponseSender).
func (r *Recorder) Send(resp *inference.Response, final bool) error {
	if r.Gate != nil && resp != nil {
		<-r.Gate
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.final {
		r.t.Errorf("Send(%v, %v) after the final flag", resp, final)
		return inference.Internal("response sent after the final response")
	}
	if resp == nil && !final {
		r.t.Error("Send(nil, false)")
	}
	r.events = append(r.events, Event{At: time.Since(r.start), Resp: resp, Final: final})
	if resp != nil {
		r.sent++
		if r.CancelAfter > 0 && r.sent >= r.CancelAfter {
			r.cancelled = true
		}
	}
	if final {
		r.final = true
		close(r.Finished)
	}
	if r.cancelled {
		return inference.Errorf(inference.CodeCancelled, "request cancelled")
	}
	return nil
}

// Fail records the request's failure (inference.ResponseSender).
func (r *Recorder) Fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.final {
		r.t.Errorf("Fail(%v) after the final flag", err)
		return
	}
	r.events = append(r.events, Event{At: time.Since(r.start), Final: true, Err: err})
	r.final = true
	close(r.Finished)
}

// Cancelled reports the cancellation Cancel or CancelAfter set.
func (r *Recorder) Cancelled() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cancelled && !r.SendErrorOnly
}

// Since is the time since the recorder was made.
func (r *Recorder) Since() time.Duration { return time.Since(r.start) }

// Cancel reports the request cancelled from now on.
func (r *Recorder) Cancel() {
	r.mu.Lock()
	r.cancelled = true
	r.mu.Unlock()
}

// Events returns the calls received so far.
func (r *Recorder) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

// Int32s encodes values as an INT32 tensor's bytes (little-endian).
func Int32s(vs ...int32) []byte {
	b := make([]byte, 0, 4*len(vs))
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, uint32(v))
	}
	return b
}

// Float32s encodes values as an FP32 tensor's bytes (little-endian).
func Float32s(vs ...float32) []byte {
	b := make([]byte, 0, 4*len(vs))
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

// ReadInt32s decodes an INT32 tensor's bytes.
func ReadInt32s(b []byte) []int32 {
	out := make([]int32, len(b)/4)
	for i := range out {
		out[i] = int32(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}
