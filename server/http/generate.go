package httpfront

import (
	"bufio"
	"context"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/jsonw"
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/trace"
)

// The generate extension (Triton's provisional
// docs/protocol/extension_generate.md) takes a flat JSON object and answers
// with one, for models that take and produce a few small tensors, text
// models above all. The mapping follows Triton's HandleGenerate and
// GenerateRequestClass (src/http_server.cc):
//
//   - a top-level key that names a model input becomes that input: a
//     scalar or a 1-D array of strings (BYTES), numbers (the input's type)
//     or booleans, shaped by spreading the element count over the input's
//     dimensions (see generateShape);
//   - "id" is the request id; "parameters" is an object whose keys are
//     mapped the same way (an input, or else a parameter);
//   - any other key is a request parameter, with the rules of infer's
//     request parameters;
//   - the response has "id" (when there is one), "model_name",
//     "model_version", then the response parameters and the outputs at
//     top level, a one-element output as a scalar and any other as a flat
//     array, all keys in byte order, as Triton writes them from a sorted
//     map.
//
// Unlike infer, generate serves decoupled models: /generate wants exactly
// one response from them, /generate_stream sends each response as a
// Server-Sent Event.

const (
	contentTypeSSE = "text/event-stream; charset=utf-8"

	// generateQueue bounds the encoded events a generate_stream request
	// holds between the model and its client; a slow client holds the
	// model's sender back beyond it.
	generateQueue = 4
)

var (
	errGenerateEncoding = inference.InvalidArg("Unsupported content-encoding, only 'identity' is supported.")
	errGenerateCount    = inference.Internal("generate expects model to produce exactly 1 response, use generate stream for model that generates various number of responses")
	errGenerateID       = inference.InvalidArg("Unable to parse 'id': expected a string")
	errGenerateParams   = inference.InvalidArg("Expected JSON object for keyword: 'parameters'")
)

// generateCall is one generate request. Unlike an inferCall it is not
// pooled: its inputs are decoded into buffers of its own, so it does not
// alias the HTTP body, and a streamed request outlives the handler.
type generateCall struct {
	call  inferCall // the request and its disconnect watch
	tr    *trace.Trace
	start time.Time // when the request went to the core
}

// finish records the core's part of the request in its trace.
func (g *generateCall) finish() {
	g.tr.Request(&g.call.req, nil, g.start, time.Now())
	g.tr.Finish()
}

// generate serves POST /v2/models/{m}[/versions/{v}]/generate and
// generate_stream.
func (s *Server) generate(ctx *fasthttp.RequestCtx, rt route, stream bool) {
	arrival := time.Now()
	version, err := modelVersion(rt.version)
	if err != nil {
		respondErr(ctx, err)
		return
	}
	// As in Triton, the model's inputs decide which keys are tensors, and
	// an unknown model is refused before the body is read.
	cfg, err := s.core.ModelConfig(s.baseCtx, rt.model, version)
	if err != nil {
		respondErr(ctx, err)
		return
	}
	if enc := string(scanInferHeaders(ctx).contentEncoding); enc != "" && enc != "identity" {
		respondErr(ctx, errGenerateEncoding)
		return
	}
	g := &generateCall{}
	g.call.req.ModelName = rt.model
	g.call.req.ModelVersion = version
	g.call.req.Arrival = arrival
	if err := decodeGenerate(&g.call, ctx.PostBody(), cfg); err != nil {
		s.log.Debug().Err(err).Str("model", rt.model).Msg("HTTP generate request refused")
		respondErr(ctx, err)
		return
	}
	g.tr = s.sampleTrace(rt.model)
	g.tr.Attach(&g.call.req)
	g.tr.Record("HTTP_RECV_START", arrival)
	g.start = time.Now()
	g.tr.Record("HTTP_RECV_END", g.start)
	if stream {
		s.generateStream(ctx, g)
	} else {
		s.generateOnce(ctx, g)
	}
}

// generateOnce runs a /generate request and answers with its one
// response.
func (s *Server) generateOnce(ctx *fasthttp.RequestCtx, g *generateCall) {
	defer g.finish()
	buf := startJSON(ctx)
	var (
		n      int   // responses
		encErr error // the response could not be written as JSON
	)
	// The sink calls out one response at a time and not after
	// InferStream returned, so these variables need no lock.
	out := func(resp *inference.Response, _ bool) error {
		if resp == nil {
			return nil // a decoupled model's final flag alone
		}
		defer resp.Done()
		if n++; n > 1 {
			return errGenerateCount // the answer is this error: stop the model
		}
		buf, encErr = appendGenerateJSON(buf, &g.call.req, resp)
		return encErr
	}
	rctx, cancel := context.WithCancel(s.requestParent)
	g.call.watch.start(s.baseCtx, ctx.Conn(), cancel, s.watchHook)
	err := s.core.InferStream(rctx, &g.call.req, out)
	g.call.watch.stop()
	cancel()
	switch {
	case encErr != nil:
		err = encErr
	case n > 1, err == nil && n == 0:
		// Triton answers this under the status of the first response
		// (it starts the reply then); the answer is known here first.
		err = errGenerateCount
	}
	if err != nil {
		ctx.Response.SwapBody(buf)
		s.log.Debug().Err(err).Str("model", g.call.req.ModelName).Str("id", g.call.req.ID).Msg("generate failed")
		respondErr(ctx, err)
		return
	}
	finishJSON(ctx, buf)
}

// generateStream runs a /generate_stream request. The status is decided
// by how the request starts: an error before the first response is a
// plain JSON error with its status; after that the answer is 200 and
// the events follow as the model sends them, an error among them as a
// last {"error": ...} event.
func (s *Server) generateStream(ctx *fasthttp.RequestCtx, g *generateCall) {
	rctx, cancel := context.WithCancel(s.requestParent)
	st := &eventStream{
		g:      g,
		events: make(chan []byte, generateQueue),
		done:   make(chan error, 1),
		cancel: cancel,
	}
	g.call.watch.start(s.baseCtx, ctx.Conn(), cancel, s.watchHook)
	go st.run(rctx, s.core)
	handedOff := false
	defer func() {
		if !handedOff { // an early answer, or a panic
			st.close()
		}
	}()
	first, ok := st.next()
	if !ok && st.err != nil {
		s.log.Debug().Err(st.err).Str("model", g.call.req.ModelName).Str("id", g.call.req.ID).Msg("generate failed")
		respondErr(ctx, st.err)
		return
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType(contentTypeSSE)
	if !ok {
		return // only the final flag: an empty stream
	}
	handedOff = true
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) { st.write(w, first) })
}

// eventStream carries the events of one generate_stream request from the
// model to the client. run, on a goroutine of its own, encodes each
// response into the bounded events channel and reports the end on done;
// the handler reads the first event, fasthttp's stream writer the rest.
// The last reader calls close, which cancels the request, stops the
// disconnect watch and waits for run.
type eventStream struct {
	g      *generateCall
	events chan []byte // encoded events; bounded
	done   chan error  // run's result; buffered, so that run always ends
	cancel context.CancelFunc

	// Read by the consumer only.
	ended bool  // done was received
	err   error // the error that ended the request
}

// run passes the request to the core and each response, encoded, to
// events, until the request ends or its context is cancelled.
func (st *eventStream) run(ctx context.Context, core Core) {
	req := &st.g.call.req
	var encErr error // set by out, read once InferStream returned
	err := core.InferStream(ctx, req, func(resp *inference.Response, _ bool) error {
		if resp == nil {
			return nil // a decoupled model's final flag alone: no event
		}
		ev, err := appendGenerateEvent(nil, req, resp)
		resp.Done()
		if err != nil {
			encErr = err
			return err
		}
		select {
		case st.events <- ev:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	if encErr != nil {
		err = encErr
	}
	st.done <- err
}

// next returns the next event, or false once the request has ended, with
// st.err set to the error that ended it.
func (st *eventStream) next() ([]byte, bool) {
	if !st.ended {
		select {
		case ev := <-st.events:
			return ev, true
		case err := <-st.done:
			st.ended, st.err = true, err
		}
	}
	// run has returned: every event it queued is in the channel.
	select {
	case ev := <-st.events:
		return ev, true
	default:
		return nil, false
	}
}

// write is the stream writer: it sends first and the events after it,
// flushing each, then an error event if the request failed. A failed
// write means the client is gone; close then cancels the request.
func (st *eventStream) write(w *bufio.Writer, first []byte) {
	defer st.close()
	for ev, ok := first, true; ok; ev, ok = st.next() {
		if !writeEvent(w, ev) {
			return
		}
	}
	if st.err != nil {
		writeEvent(w, appendErrorEvent(nil, st.err))
	}
}

func writeEvent(w *bufio.Writer, ev []byte) bool {
	if _, err := w.Write(ev); err != nil {
		return false
	}
	return w.Flush() == nil
}

// close ends the request if it is still running and returns once run has
// returned; the watch is stopped first, so that the connection's read
// side is fasthttp's again before the stream ends.
func (st *eventStream) close() {
	st.g.call.watch.stop()
	st.cancel()
	if !st.ended {
		st.err = <-st.done
		st.ended = true
	}
	st.g.finish()
}

// appendGenerateEvent writes resp as a Server-Sent Event.
func appendGenerateEvent(dst []byte, req *inference.Request, resp *inference.Response) ([]byte, error) {
	dst = append(dst, "data: "...)
	dst, err := appendGenerateJSON(dst, req, resp)
	return append(dst, "\n\n"...), err
}

// appendErrorEvent writes err as an {"error": ...} event.
func appendErrorEvent(dst []byte, err error) []byte {
	dst = append(dst, `data: {"error":`...)
	dst = jsonw.AppendString(dst, err.Error())
	return append(dst, "}\n\n"...)
}

// generateField is one top-level member of a generate response.
type generateField struct {
	key    string
	value  any               // id, model_name, model_version, a parameter
	tensor *inference.Tensor // an output
}

// appendGenerateJSON writes one generate response object. A name taken
// by an earlier kind (id, model_name, model_version, then parameters,
// then outputs) hides the later one, as in Triton.
func appendGenerateJSON(dst []byte, req *inference.Request, resp *inference.Response) ([]byte, error) {
	fields := make([]generateField, 0, 3+len(resp.Parameters)+len(resp.Outputs))
	add := func(f generateField) {
		for i := range fields {
			if fields[i].key == f.key {
				return
			}
		}
		fields = append(fields, f)
	}
	id := resp.ID
	if id == "" {
		id = req.ID
	}
	if id != "" {
		add(generateField{key: "id", value: id})
	}
	name := resp.ModelName
	if name == "" {
		name = req.ModelName
	}
	add(generateField{key: "model_name", value: name})
	add(generateField{key: "model_version", value: resp.ModelVersion})
	for _, k := range jsonw.SortedKeys(resp.Parameters) {
		v := resp.Parameters[k]
		if _, ok := v.([]byte); ok {
			return dst, inference.Unsupported("Response parameter '%s' has type 'TRITONSERVER_PARAMETER_BYTES' which is not currently supported", k)
		}
		add(generateField{key: k, value: v})
	}
	for i := range resp.Outputs {
		add(generateField{key: resp.Outputs[i].Name, tensor: &resp.Outputs[i]})
	}
	slices.SortFunc(fields, func(a, b generateField) int { return strings.Compare(a.key, b.key) })

	dst = append(dst, '{')
	for i, f := range fields {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = jsonw.AppendString(dst, f.key)
		dst = append(dst, ':')
		if f.tensor == nil {
			dst = jsonw.AppendParamValue(dst, f.value)
			continue
		}
		var err error
		if dst, err = appendGenerateTensor(dst, f.tensor); err != nil {
			return dst, err
		}
	}
	return append(dst, '}'), nil
}

// appendGenerateTensor writes an output's elements: one element as a bare
// value, any other count as a flat array.
func appendGenerateTensor(dst []byte, t *inference.Tensor) ([]byte, error) {
	if inference.ElementCount(t.Shape) == 1 {
		return appendTensorData(dst, t)
	}
	dst = append(dst, '[')
	dst, err := appendTensorData(dst, t)
	return append(dst, ']'), err
}

// decodeGenerate maps a generate request body onto c.req for the model
// configured by cfg.
func decodeGenerate(c *inferCall, body []byte, cfg *inferencepb.ModelConfig) error {
	// Triton parses the whole document before mapping it: a syntax error
	// reads the same wherever it is.
	check := jsonReader{buf: body}
	if err := check.skipValue(); err != nil {
		return err
	}
	if err := check.end(); err != nil {
		return err
	}
	batched := cfg.GetMaxBatchSize() > 0
	r := jsonReader{buf: body}
	err := r.object(func(key []byte) error {
		switch string(key) {
		case "id":
			return decodeGenerateID(&r, c, cfg, batched)
		case "parameters":
			if configInput(cfg, key) != nil {
				return inference.InvalidArg("Keyword 'parameters' for nested schema also given as input tensor name")
			}
			if r.peek() != '{' {
				return errGenerateParams
			}
			err := r.object(func(k []byte) error { return decodeGenerateMember(&r, c, cfg, k, batched) })
			if err != nil {
				return inference.Errorf(inference.CodeOf(err), "Converting keyword: 'parameters': %w", err)
			}
			return nil
		default:
			return decodeGenerateMember(&r, c, cfg, key, batched)
		}
	})
	if err != nil {
		return err
	}
	return checkGenerateInputs(c, cfg)
}

// decodeGenerateID reads "id", the request id. Triton maps the key like
// any other as well, so a model input named "id" takes its value too.
func decodeGenerateID(r *jsonReader, c *inferCall, cfg *inferencepb.ModelConfig, batched bool) error {
	start, end, err := r.span()
	if err != nil {
		return err
	}
	v := jsonReader{buf: r.buf[start:end]}
	if v.peek() != '"' {
		return errGenerateID
	}
	id, err := v.readString()
	if err != nil {
		return err
	}
	c.req.ID = string(id)
	if in := configInput(cfg, []byte("id")); in != nil {
		v = jsonReader{buf: r.buf[start:end]}
		return decodeGenerateInput(&v, c, in, batched)
	}
	return nil
}

// decodeGenerateMember reads one member: a model input or a request
// parameter.
func decodeGenerateMember(r *jsonReader, c *inferCall, cfg *inferencepb.ModelConfig, key []byte, batched bool) error {
	if in := configInput(cfg, key); in != nil {
		return decodeGenerateInput(r, c, in, batched)
	}
	return c.decodeRequestParam(r, string(key))
}

// configInput returns the model input named name, or nil.
func configInput(cfg *inferencepb.ModelConfig, name []byte) *inferencepb.ModelInput {
	for _, in := range cfg.GetInput() {
		if in.GetName() == string(name) {
			return in
		}
	}
	return nil
}

// decodeGenerateInput reads the value of a key that names input in: a
// scalar or a 1-D array of values of the input's type.
func decodeGenerateInput(r *jsonReader, c *inferCall, in *inferencepb.ModelInput, batched bool) error {
	name := in.GetName()
	if c.req.Input(name) != nil {
		return inference.InvalidArg("input '%s' already exists in request", name)
	}
	dt := inference.DataType(in.GetDataType())
	switch dt {
	case inference.FP16, inference.BF16:
		return inference.InvalidArg("receiving %s data via JSON is not supported. Please use the binary data format for input %s", dt, name)
	default:
	}
	if !dt.Valid() {
		return inference.InvalidArg("invalid datatype for input %s", name)
	}
	t := inference.Tensor{Name: name, DataType: dt}
	w := dataWalker{r: r, t: &t, want: math.MaxInt64}
	var err error
	if r.peek() == '[' {
		err = r.array(func() error {
			if r.peek() == '[' {
				return inference.InvalidArg("Unable to parse '%s': expected a value or a 1-D array of values", name)
			}
			return w.value()
		})
	} else {
		err = w.value()
	}
	if err != nil {
		return err
	}
	if t.Shape, err = generateShape(name, in.GetDims(), batched, w.n); err != nil {
		return err
	}
	t.Data = w.out
	if t.Data == nil {
		t.Data = []byte{}
	}
	c.req.Inputs = append(c.req.Inputs, t)
	return nil
}

// generateShape shapes n elements for an input with dims (and a leading
// batch dimension when the model batches), as Triton does for generate:
// the fixed dimensions, innermost first, must divide the count; the
// innermost variable dimension takes what remains and the other variable
// ones (the batch dimension among them) are 1. A scalar or a 1-D array
// thus becomes [n], or [1, n] for a batching model.
func generateShape(name string, dims []int64, batched bool, n int64) ([]int64, error) {
	shape := make([]int64, 0, len(dims)+1)
	if batched {
		shape = append(shape, -1)
	}
	shape = append(shape, dims...)
	errShape := inference.InvalidArg("The schema can not convert input '%s' to tensor with proper shape", name)
	rest := n
	for i := len(shape) - 1; i >= 0; i-- {
		switch d := shape[i]; {
		case d < 0:
		case d == 0:
			// Triton divides by it; an empty input is what fits.
			if rest != 0 {
				return nil, errShape
			}
			rest = 1
		case rest%d != 0:
			return nil, errShape
		default:
			rest /= d
		}
	}
	for i := len(shape) - 1; i >= 0; i-- {
		if shape[i] < 0 {
			shape[i], rest = rest, 1
		}
	}
	if rest != 1 {
		return nil, errShape
	}
	return shape, nil
}

// checkGenerateInputs refuses a request that lacks a required input, with
// the core's text. The inputs the sequence batcher supplies are not the
// client's to send.
func checkGenerateInputs(c *inferCall, cfg *inferencepb.ModelConfig) error {
	required := 0
	var missing []string
	for _, in := range cfg.GetInput() {
		if in.GetOptional() || sequenceSupplied(cfg, in.GetName()) {
			continue
		}
		required++
		if c.req.Input(in.GetName()) == nil {
			missing = append(missing, "'"+in.GetName()+"'")
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return inference.InvalidArg("expected %d inputs but got %d inputs for model '%s'. Missing required input(s) [%s]",
		required, len(c.req.Inputs), c.req.ModelName, strings.Join(missing, ", "))
}

// sequenceSupplied reports whether the sequence batcher supplies the
// named input (a control or a state input).
func sequenceSupplied(cfg *inferencepb.ModelConfig, name string) bool {
	sb := cfg.GetSequenceBatching()
	for _, ci := range sb.GetControlInput() {
		if ci.GetName() == name {
			return true
		}
	}
	for _, st := range sb.GetState() {
		if st.GetInputName() == name {
			return true
		}
	}
	return false
}
