package python

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/jsonw"
)

// outputSpec is what the configuration says of one output.
type outputSpec struct {
	dt   inference.DataType
	dims []int64
}

// tensorRules checks the tensors a model answers with against its
// configuration.
type tensorRules struct {
	model    string
	outputs  map[string]outputSpec
	batching bool
}

// Request parameters the front ends turn into request fields, which a
// model reads through its own accessors (correlation_id(), flags(),
// timeout()) rather than parameters().
var reservedParams = map[string]bool{
	"sequence_id": true, "sequence_start": true, "sequence_end": true,
	"priority": true, "timeout": true,
}

// appendRequest writes one request of an exec frame, copying its inputs
// into the parent's shared memory (the chunks are added to taken).
func (s *stub) appendRequest(b []byte, r int64, req *inference.Request, taken *[][2]int64) ([]byte, error) {
	b = append(b, `{"r":`...)
	b = strconv.AppendInt(b, r, 10)
	b = appendStr(b, "id", req.ID)
	b = appendCorrelation(b, req.Parameters)
	var flags int64
	if v, _ := req.Parameters.Bool("sequence_start"); v {
		flags |= 1
	}
	if v, _ := req.Parameters.Bool("sequence_end"); v {
		flags |= 2
	}
	b = appendInt(b, "fl", flags)
	to, _ := req.Parameters.Int("timeout")
	b = appendInt(b, "to", max(to, 0))
	var custom inference.Parameters
	for k, v := range req.Parameters {
		if !reservedParams[k] {
			if custom == nil {
				custom = inference.Parameters{}
			}
			custom[k] = v
		}
	}
	b = appendParams(b, "p", custom)
	b = append(b, `,"out":[`...)
	for i, o := range req.Outputs {
		if i > 0 {
			b = append(b, ',')
		}
		b = jsonw.AppendString(b, o.Name)
	}
	b = append(b, `],"in":`...)
	b, err := s.appendTensors(b, req.Inputs, taken)
	if err != nil {
		return nil, err
	}
	return append(b, '}'), nil
}

func appendCorrelation(b []byte, p inference.Parameters) []byte {
	switch v := p["sequence_id"].(type) {
	case string:
		return appendStr(b, "cid", v)
	case int64:
		return appendInt(b, "cid", v)
	case uint64:
		b = append(b, `,"cid":`...)
		return strconv.AppendUint(b, v, 10)
	}
	return appendInt(b, "cid", 0)
}

// exec runs one batch on the stub and returns its done frame and when the
// exec frame went to the stub (the inputs in its memory). For a decoupled
// model each request's responses are routed to its sender as the stub
// sends them, until its final flag.
func (s *stub) exec(ctx context.Context, batch []*inference.Request, rules *tensorRules, decoupled bool) (*inMsg, time.Time, error) {
	s.mu.Lock()
	if s.gone {
		err := s.goneErr
		s.mu.Unlock()
		return nil, time.Time{}, err
	}
	s.active.Add(1)
	s.nextID++
	id := s.nextID
	handles := make([]int64, len(batch))
	for i := range batch {
		s.nextID++
		handles[i] = s.nextID
	}
	ch := make(chan *inMsg, 1)
	s.waiters[id] = ch
	s.execCtx = ctx
	for i, r := range batch {
		if decoupled {
			s.streams[handles[i]] = &stream{sender: r.Sender(), rules: rules}
		} else {
			s.live[handles[i]] = r.Sender()
		}
		if r.Span != nil {
			s.spans[handles[i]] = r.Span
		}
	}
	s.mu.Unlock()
	defer s.active.Done()
	defer func() {
		s.mu.Lock()
		if s.execCtx == ctx {
			s.execCtx = nil
		}
		s.mu.Unlock()
	}()

	b := newFrame("exec")
	b = appendInt(b, "id", id)
	b = append(b, `,"reqs":[`...)
	var err error
	var taken [][2]int64
	for i, r := range batch {
		if i > 0 {
			b = append(b, ',')
		}
		if b, err = s.appendRequest(b, handles[i], r, &taken); err != nil {
			_ = s.arena.release(taken) // never sent: the stub cannot free them
			break
		}
	}
	b = append(b, ']')
	if err == nil {
		err = s.send(b)
	}
	if err != nil {
		s.forget(id, handles)
		return nil, time.Time{}, err
	}
	sent := time.Now()
	m, err := s.await(ctx, id, ch)
	if err != nil || !decoupled || m.Error != nil {
		s.forget(id, handles)
	}
	return m, sent, err
}

// forget drops the waiter of an exec and the streams of its requests.
func (s *stub) forget(id int64, handles []int64) {
	s.mu.Lock()
	delete(s.waiters, id)
	for _, h := range handles {
		delete(s.streams, h)
		delete(s.live, h)
		delete(s.spans, h)
	}
	s.mu.Unlock()
}

// response turns a response object of the stub into a Response whose
// outputs are views of the stub's memory, held until the front end is
// done with them. A response with an error returns it as err.
func (s *stub) response(out []tensorDesc, params []byte, werr *wireError, rules *tensorRules) (*inference.Response, error) {
	outs, chunks, err := s.viewTensors(out)
	if err != nil {
		return nil, inference.Internal("output of model '%s': %v", rules.model, err)
	}
	fail := func(err error) (*inference.Response, error) {
		s.arena.releasePeer(chunks)
		return nil, err
	}
	resp := &inference.Response{Outputs: outs}
	if werr != nil {
		return fail(werr.err())
	}
	for i := range resp.Outputs {
		if err := rules.check(&resp.Outputs[i]); err != nil {
			return fail(err)
		}
	}
	p, err := parseParams(params)
	if err != nil {
		return fail(inference.Internal("response of model '%s': %v", rules.model, err))
	}
	resp.Parameters = p
	if len(chunks) > 0 {
		resp.Release = func() { s.releaseChunks(chunks) }
	}
	return resp, nil
}

// appendTensors writes a JSON list of descriptors of ts, each tensor's
// bytes copied into a chunk of the parent's memory, and records the chunks
// in taken, so that a frame that is never sent can give them back.
func (s *stub) appendTensors(b []byte, ts []inference.Tensor, taken *[][2]int64) ([]byte, error) {
	b = append(b, '[')
	for i := range ts {
		if i > 0 {
			b = append(b, ',')
		}
		t := &ts[i]
		var c chunk
		if len(t.Data) > 0 {
			var err error
			if c, err = s.arena.alloc(int64(len(t.Data))); err != nil {
				return nil, err
			}
			copy(c.mem, t.Data)
			*taken = append(*taken, [2]int64{int64(c.seg), c.off})
		}
		b = appendDesc(b, t.Name, t.DataType, t.Shape, c)
	}
	return append(b, ']'), nil
}

// viewTensors turns descriptors of the stub's memory into tensors whose
// data are views of it, holding each chunk until it is released; on an
// error nothing is held.
func (s *stub) viewTensors(ds []tensorDesc) ([]inference.Tensor, []peerChunk, error) {
	ts := make([]inference.Tensor, 0, len(ds))
	var chunks []peerChunk
	for _, d := range ds {
		var data []byte
		if d.L > 0 {
			v, c, err := s.arena.view(d.S, d.O, d.L)
			if err != nil {
				s.arena.releasePeer(chunks)
				return nil, nil, fmt.Errorf("tensor '%s': %w", d.N, err)
			}
			chunks = append(chunks, c)
			data = v
		}
		dt, _ := inference.ParseDataType(d.DT) // checked by decodeMsg
		ts = append(ts, inference.Tensor{Name: d.N, DataType: dt, Shape: d.SH, Data: data})
	}
	return ts, chunks, nil
}

// releaseChunks gives stub chunks back; the frees ride on the next frame
// to the stub, or go in a frame of their own once many wait.
func (s *stub) releaseChunks(cs []peerChunk) {
	s.arena.releasePeer(cs)
	if s.arena.pendingFrees() >= 256 {
		_ = s.send(newFrame("free"))
	}
}

// check tests one output against the configuration: a configured name,
// its datatype, a shape its dims allow, and well-formed BYTES.
func (r *tensorRules) check(t *inference.Tensor) error {
	spec, ok := r.outputs[t.Name]
	if !ok {
		return inference.Internal("model '%s' returned output '%s', which its configuration does not declare", r.model, t.Name)
	}
	if t.DataType != spec.dt {
		return inference.Internal("model '%s' returned output '%s' as %s; its configuration says %s", r.model, t.Name, t.DataType, spec.dt)
	}
	shape := t.Shape
	if r.batching {
		if len(shape) == 0 {
			return inference.Internal("model '%s' returned output '%s' without its batch dimension", r.model, t.Name)
		}
		shape = shape[1:]
	}
	if !inference.DimsMatch(shape, spec.dims) {
		return inference.Internal("model '%s' returned output '%s' of shape %v, which its configured dims %v do not allow", r.model, t.Name, t.Shape, spec.dims)
	}
	if t.DataType == inference.Bytes {
		n, err := inference.CountBytesElements(t.Name, t.Data)
		if err != nil {
			return inference.Internal("model '%s': %v", r.model, err)
		}
		if n != inference.ElementCount(t.Shape) {
			return inference.Internal("model '%s' returned output '%s' with %d strings for shape %v", r.model, t.Name, n, t.Shape)
		}
	}
	return nil
}

// stream is a request of a decoupled model that the stub answers with
// resp frames, on the reader goroutine, in the order it sent them.
type stream struct {
	sender inference.ResponseSender
	rules  *tensorRules
	once   sync.Once
}

func (st *stream) fail(err error) { st.once.Do(func() { st.sender.Fail(err) }) }

// deliver routes a resp frame to its request.
func (s *stub) deliver(m *inMsg) error {
	s.mu.Lock()
	st := s.streams[m.R]
	if st != nil && m.Final {
		delete(s.streams, m.R)
		delete(s.spans, m.R)
	}
	s.mu.Unlock()
	if st == nil {
		s.discard(&inMsg{Resps: []wireResp{{Out: m.Out}}})
		return nil
	}
	s.delivering.Add(1)
	defer s.delivering.Add(-1)
	if !m.Has {
		if m.Final {
			_ = st.sender.Send(nil, true)
		}
		return nil
	}
	resp, err := s.response(m.Out, m.P, m.Error, st.rules)
	if err != nil {
		// An error response ends the request: Nereid's streams carry one
		// error, as its front ends report it.
		s.mu.Lock()
		delete(s.streams, m.R)
		delete(s.spans, m.R)
		s.mu.Unlock()
		st.fail(err)
		return nil
	}
	// The sender owns the response from here, whatever Send returns.
	_ = st.sender.Send(resp, m.Final)
	return nil
}

// finishUnary sends a done frame's responses, one per request.
func (s *stub) finishUnary(batch []*inference.Request, m *inMsg, rules *tensorRules) error {
	if m.Error != nil {
		s.discard(m)
		return m.Error.err()
	}
	if len(m.Resps) != len(batch) {
		s.discard(m)
		return inference.Internal("model '%s' returned %d responses for a batch of %d requests: execute must return one InferenceResponse per request", rules.model, len(m.Resps), len(batch))
	}
	for i, r := range batch {
		w := m.Resps[i]
		resp, err := s.response(w.Out, w.P, w.Error, rules)
		if err != nil {
			r.Fail(err)
			continue
		}
		_ = r.Send(resp, true) // an error means it was cancelled meanwhile
	}
	return nil
}
