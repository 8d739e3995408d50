package python

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/repository"
)

// modelControl is what pb_utils.load_model, unload_model and
// is_model_ready need of the server (explicit model control only, as
// Triton: the server refuses the first two otherwise).
type modelControl interface {
	LoadModel(ctx context.Context, name string, opts repository.LoadOptions) error
	UnloadModel(ctx context.Context, name string, unloadDependents bool) error
	ModelReady(ctx context.Context, name, version string) (bool, error)
}

// callHandler answers what a model's stub asks of the server: BLS
// requests, model control, custom metrics.
type callHandler struct {
	model   *model
	inferer backends.Inferer
	metrics *modelMetrics
}

// handle runs on the stub's reader goroutine; anything that may block runs
// on a goroutine of the stub's (stub.work), which the stub waits for
// before it closes its arena.
func (h *callHandler) handle(s *stub, m *inMsg) error {
	switch m.T {
	case "infer":
		return h.startInfer(s, m)
	case "icancel":
		s.mu.Lock()
		cancel := s.calls[m.C]
		s.mu.Unlock()
		if cancel != nil {
			cancel()
		}
	case "call":
		id, ok := intID(m.ID)
		if !ok {
			return fmt.Errorf("call frame without an integer id")
		}
		if !s.goWork(func() { h.call(s, id, m) }) {
			return nil
		}
	case "mop":
		h.metrics.update(s, m.M, m.Op, m.V)
	}
	return nil
}

// goWork runs f on a goroutine the stub waits for; false once the stub is
// gone.
func (s *stub) goWork(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gone {
		return false
	}
	s.work.Add(1)
	go func() {
		defer s.work.Done()
		f()
	}()
	return true
}

// startInfer turns an infer frame into a request on the server. Its inputs
// are views of the stub's memory, given back when the request ends.
func (h *callHandler) startInfer(s *stub, m *inMsg) error {
	req := &inference.Request{ModelName: m.Model, ModelVersion: m.Ver}
	if len(m.ID) > 0 {
		_ = json.Unmarshal(m.ID, &req.ID)
	}
	p, err := parseParams(m.P)
	if err != nil {
		return fmt.Errorf("infer frame: %w", err)
	}
	inputs, chunks, err := s.viewTensors(m.In)
	if err != nil {
		return fmt.Errorf("infer frame: %w", err)
	}
	req.Inputs = inputs
	if p == nil && (len(m.CID) > 0 || m.Fl != 0 || m.To != 0) {
		p = inference.Parameters{}
	}
	if cid := correlationParam(m.CID); cid != nil {
		p["sequence_id"] = cid
	}
	if m.Fl&1 != 0 {
		p["sequence_start"] = true
	}
	if m.Fl&2 != 0 {
		p["sequence_end"] = true
	}
	if m.To > 0 {
		p["timeout"] = int64(m.To)
	}
	if len(p) > 0 {
		req.Parameters = p
	}
	for _, n := range m.Names {
		req.Outputs = append(req.Outputs, inference.RequestedOutput{Name: n})
	}
	ctx, cancel := context.WithCancel(s.ctx)
	s.mu.Lock()
	// A request given trace=request.trace() is traced as a child of that
	// request's trace, as an ensemble's steps are (its parent_id), while
	// the parent is in flight and sampled.
	var span inference.Span
	if parent := s.spans[m.Tr]; m.Tr != 0 && parent != nil {
		span = parent.Child(req.ModelName)
	}
	s.calls[m.C] = cancel
	if m.Par && s.execCtx != nil {
		// Made by the running execute: ended with its batch (every
		// request of it cancelled, or the batch's deadline).
		stop := context.AfterFunc(s.execCtx, cancel)
		inner := cancel
		cancel = func() { stop(); inner() }
	}
	s.mu.Unlock()
	started := s.goWork(func() {
		defer cancel()
		defer s.arena.releasePeer(chunks)
		h.runInfer(ctx, s, m.C, m.Dec, req, span)
		s.mu.Lock()
		delete(s.calls, m.C)
		s.mu.Unlock()
	})
	if !started {
		cancel()
		s.arena.releasePeer(chunks)
	}
	return nil
}

// correlationParam reads a correlation id: 0 (or "") means none.
func correlationParam(raw json.RawMessage) any {
	if len(raw) == 0 {
		return nil
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if dec.Decode(&v) != nil {
		return nil
	}
	switch v := v.(type) {
	case json.Number:
		if i, err := v.Int64(); err == nil && i != 0 {
			return i
		}
	case string:
		if v != "" {
			return v
		}
	}
	return nil
}

// runInfer sends the request into the server and every response back to
// the stub as iresp frames, the last with the final flag. span, when not
// nil, is the request's trace.
func (h *callHandler) runInfer(ctx context.Context, s *stub, call int64, decoupled bool, req *inference.Request, span inference.Span) {
	n := 0
	var version string
	var start time.Time
	if span != nil {
		span.Attach(req)
		start = time.Now()
		defer func() {
			span.Served(req, version, start, time.Now())
			span.Finish()
		}()
	}
	err := h.inferer.InferStream(ctx, req, func(resp *inference.Response, final bool) error {
		defer resp.Done()
		if resp != nil {
			version = resp.ModelVersion
			n++
			if !decoupled && n > 1 {
				return inference.InvalidArg("model '%s' sent more than one response: call exec(decoupled=True) to read them all", req.ModelName)
			}
		}
		return s.sendIResp(call, resp, final, nil)
	})
	if err != nil {
		_ = s.sendIResp(call, nil, true, err)
	}
}

// sendIResp writes one BLS response; its outputs are copied into the
// parent's shared memory.
func (s *stub) sendIResp(call int64, resp *inference.Response, final bool, rerr error) error {
	s.mu.Lock()
	if s.gone {
		s.mu.Unlock()
		return errStubGone
	}
	s.active.Add(1)
	s.mu.Unlock()
	defer s.active.Done()
	b := newFrame("iresp")
	b = appendInt(b, "c", call)
	b = appendBool(b, "has", resp != nil)
	b = appendBool(b, "final", final)
	if resp != nil {
		b = appendParams(b, "p", resp.Parameters)
		b = append(b, `,"out":`...)
		var taken [][2]int64
		var err error
		if b, err = s.appendTensors(b, resp.Outputs, &taken); err != nil {
			_ = s.arena.release(taken)
			return err
		}
	}
	b = appendError(b, rerr)
	return s.send(b)
}

// call answers one call frame with a reply frame.
func (h *callHandler) call(s *stub, id int64, m *inMsg) {
	v, err := h.callOp(s, m)
	b := newFrame("reply")
	b = appendInt(b, "id", id)
	if err == nil {
		raw, merr := json.Marshal(v)
		if merr != nil {
			err = merr
		} else {
			b = appendRaw(b, "v", raw)
		}
	}
	b = appendError(b, err)
	_ = s.send(b)
}

func (h *callHandler) callOp(s *stub, m *inMsg) (any, error) {
	var a struct {
		R          int64             `json:"r"`
		Model      string            `json:"model"`
		Config     *string           `json:"config"`
		Files      map[string]string `json:"files"`
		Dependents bool              `json:"dependents"`
		Version    string            `json:"version"`
		F          int64             `json:"f"`
		M          int64             `json:"m"`
		Name       string            `json:"name"`
		Desc       string            `json:"desc"`
		Kind       string            `json:"kind"`
		Labels     map[string]string `json:"labels"`
		Buckets    []float64         `json:"buckets"`
	}
	if len(m.A) > 0 {
		if err := json.Unmarshal(m.A, &a); err != nil {
			return nil, inference.InvalidArg("call '%s': %v", m.Op, err)
		}
	}
	switch m.Op {
	case "cancelled":
		s.mu.Lock()
		var sender inference.ResponseSender
		if st := s.streams[a.R]; st != nil {
			sender = st.sender
		} else {
			sender = s.live[a.R]
		}
		s.mu.Unlock()
		// A request that has ended is as good as cancelled to its model.
		return sender == nil || sender.Cancelled(), nil
	case "load", "unload", "model_ready":
		ctl := h.control()
		if ctl == nil {
			return nil, inference.Unavailable("model control is not available to Python models yet: the server is still starting")
		}
		ctx := s.ctx
		switch m.Op {
		case "load":
			opts := repository.LoadOptions{Files: map[string][]byte{}}
			if a.Config != nil {
				opts.Config = *a.Config
			}
			for path, b64 := range a.Files {
				data, err := base64.StdEncoding.DecodeString(b64)
				if err != nil {
					return nil, inference.InvalidArg("load_model: file '%s' is not base64: %v", path, err)
				}
				opts.Files[path] = data
			}
			if len(opts.Files) == 0 {
				opts.Files = nil
			}
			return nil, ctl.LoadModel(ctx, a.Model, opts)
		case "unload":
			return nil, ctl.UnloadModel(ctx, a.Model, a.Dependents)
		default:
			ok, err := ctl.ModelReady(ctx, a.Model, a.Version)
			if err != nil {
				return false, nil //nolint:nilerr // an unknown or unavailable model is not ready
			}
			return ok, nil
		}
	case "mfam":
		return nil, h.metrics.family(s, a.F, a.Name, a.Desc, a.Kind)
	case "metric":
		return nil, h.metrics.metric(s, a.F, a.M, a.Labels, a.Buckets)
	case "mdel":
		h.metrics.remove(s, a.F, a.M)
		return nil, nil
	case "mval":
		return h.metrics.value(s, a.M)
	}
	return nil, inference.InvalidArg("unknown call '%s'", m.Op)
}

// control finds the server behind the late-bound Inferer.
func (h *callHandler) control() modelControl {
	target := h.inferer
	if l, ok := target.(*backends.LateInferer); ok {
		target = l.Target()
	}
	c, _ := target.(modelControl)
	return c
}
