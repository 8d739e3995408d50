package v2wire

import (
	"bufio"
	"context"
	"math"
	"slices"
	"strings"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/jsonw"
	"github.com/nereid-project/nereid/proto/inferencepb"
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

// ContentTypeEventStream is the Content-Type of a generate_stream answer.
const ContentTypeEventStream = "text/event-stream; charset=utf-8"

// generateQueue bounds the encoded events a generate_stream request holds
// between the model and its client; a slow client holds the model's sender
// back beyond it.
const generateQueue = 4

var (
	// ErrGenerateEncoding refuses a compressed generate request body.
	ErrGenerateEncoding = inference.InvalidArg("Unsupported content-encoding, only 'identity' is supported.")
	errGenerateCount    = inference.Internal("generate expects model to produce exactly 1 response, use generate stream for model that generates various number of responses")
	errGenerateID       = inference.InvalidArg("Unable to parse 'id': expected a string")
	errGenerateParams   = inference.InvalidArg("Expected JSON object for keyword: 'parameters'")
)

// StreamFunc runs a request that may have several responses: the core's
// InferStream, with its contract (out is called one response at a time,
// final true on the last; it returns promptly once ctx is done).
type StreamFunc func(ctx context.Context, req *inference.Request, out inference.ResponseFunc) error

// GenerateOne runs a /generate request and appends its one response, as
// JSON, to dst. It returns dst (grown) with the error that ended the
// request, if any: a model that answers with no response or with more
// than one is refused.
func GenerateOne(ctx context.Context, infer StreamFunc, req *inference.Request, dst []byte) ([]byte, error) {
	var (
		n      int   // responses
		encErr error // the response could not be written as JSON
	)
	// The sink is called one response at a time and not after infer
	// returned, so these variables need no lock.
	out := func(resp *inference.Response, _ bool) error {
		if resp == nil {
			return nil // a decoupled model's final flag alone
		}
		defer resp.Done()
		if n++; n > 1 {
			return errGenerateCount // the answer is this error: stop the model
		}
		dst, encErr = AppendGenerateJSON(dst, req, resp)
		return encErr
	}
	err := infer(ctx, req, out)
	switch {
	case encErr != nil:
		err = encErr
	case n > 1, err == nil && n == 0:
		// Triton answers this under the status of the first response
		// (it starts the reply then); the answer is known here first.
		err = errGenerateCount
	}
	return dst, err
}

// EventStream carries the events of one generate_stream request from the
// model to the client. Its goroutine passes the request to the core and
// encodes each response into a bounded channel; the front end reads the
// first event with Next (an error before it is a plain error answer), then
// hands the rest to Write. Whoever reads last calls Close, which cancels
// the request and returns once the goroutine has.
type EventStream struct {
	req    *inference.Request
	events chan []byte // encoded events; bounded
	done   chan error  // the goroutine's result; buffered, so that it always ends
	cancel context.CancelFunc
	stop   func() // run first by Close; may be nil
	finish func() // run last by Close; may be nil

	// Read by the consumer only.
	ended bool  // done was received
	err   error // the error that ended the request
}

// StartEventStream starts req on infer under ctx, which cancel ends. Close
// calls stop (the front end's own watch of the client, say) before it
// cancels the request and finish once the request has ended; either may
// be nil.
func StartEventStream(ctx context.Context, cancel context.CancelFunc, req *inference.Request, infer StreamFunc, stop, finish func()) *EventStream {
	st := &EventStream{
		req:    req,
		events: make(chan []byte, generateQueue),
		done:   make(chan error, 1),
		cancel: cancel,
		stop:   stop,
		finish: finish,
	}
	go st.run(ctx, infer)
	return st
}

// run passes the request to the core and each response, encoded, to
// events, until the request ends or its context is cancelled.
func (st *EventStream) run(ctx context.Context, infer StreamFunc) {
	var encErr error // set by out, read once infer returned
	err := infer(ctx, st.req, func(resp *inference.Response, _ bool) error {
		if resp == nil {
			return nil // a decoupled model's final flag alone: no event
		}
		ev, err := appendGenerateEvent(nil, st.req, resp)
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

// Next returns the next event, or false once the request has ended; Err
// then says why.
func (st *EventStream) Next() ([]byte, bool) {
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

// Err is the error that ended the request, once Next returned false.
func (st *EventStream) Err() error { return st.err }

// Write is a stream writer: it sends first and the events after it,
// flushing each, then an error event if the request failed, and closes
// the stream. A failed write means the client is gone; Close then cancels
// the request.
func (st *EventStream) Write(w *bufio.Writer, first []byte) {
	defer st.Close()
	for ev, ok := first, true; ok; ev, ok = st.Next() {
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

// Close ends the request if it is still running and returns once the
// stream's goroutine has returned; stop runs first, finish last.
func (st *EventStream) Close() {
	if st.stop != nil {
		st.stop()
	}
	st.cancel()
	if !st.ended {
		st.err = <-st.done
		st.ended = true
	}
	if st.finish != nil {
		st.finish()
	}
}

// appendGenerateEvent writes resp as a Server-Sent Event.
func appendGenerateEvent(dst []byte, req *inference.Request, resp *inference.Response) ([]byte, error) {
	dst = append(dst, "data: "...)
	dst, err := AppendGenerateJSON(dst, req, resp)
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

// AppendGenerateJSON writes one generate response object. A name taken
// by an earlier kind (id, model_name, model_version, then parameters,
// then outputs) hides the later one, as in Triton.
func AppendGenerateJSON(dst []byte, req *inference.Request, resp *inference.Response) ([]byte, error) {
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
		return AppendTensorData(dst, t)
	}
	dst = append(dst, '[')
	dst, err := AppendTensorData(dst, t)
	return append(dst, ']'), err
}

// DecodeGenerate maps a generate request body onto c.Req for the model
// configured by cfg.
func DecodeGenerate(c *Call, body []byte, cfg *inferencepb.ModelConfig) error {
	// Triton parses the whole document before mapping it: a syntax error
	// reads the same wherever it is.
	check := Reader{buf: body}
	if err := check.SkipValue(); err != nil {
		return err
	}
	if err := check.End(); err != nil {
		return err
	}
	batched := cfg.GetMaxBatchSize() > 0
	r := Reader{buf: body}
	err := r.Object(func(key []byte) error {
		switch string(key) {
		case "id":
			return decodeGenerateID(&r, c, cfg, batched)
		case "parameters":
			if configInput(cfg, key) != nil {
				return inference.InvalidArg("Keyword 'parameters' for nested schema also given as input tensor name")
			}
			if r.Peek() != '{' {
				return errGenerateParams
			}
			err := r.Object(func(k []byte) error { return decodeGenerateMember(&r, c, cfg, k, batched) })
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
func decodeGenerateID(r *Reader, c *Call, cfg *inferencepb.ModelConfig, batched bool) error {
	start, end, err := r.Span()
	if err != nil {
		return err
	}
	v := Reader{buf: r.buf[start:end]}
	if v.Peek() != '"' {
		return errGenerateID
	}
	id, err := v.ReadString()
	if err != nil {
		return err
	}
	c.Req.ID = string(id)
	if in := configInput(cfg, []byte("id")); in != nil {
		v = Reader{buf: r.buf[start:end]}
		return decodeGenerateInput(&v, c, in, batched)
	}
	return nil
}

// decodeGenerateMember reads one member: a model input or a request
// parameter.
func decodeGenerateMember(r *Reader, c *Call, cfg *inferencepb.ModelConfig, key []byte, batched bool) error {
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
func decodeGenerateInput(r *Reader, c *Call, in *inferencepb.ModelInput, batched bool) error {
	name := in.GetName()
	if c.Req.Input(name) != nil {
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
	if r.Peek() == '[' {
		err = r.Array(func() error {
			if r.Peek() == '[' {
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
	c.Req.Inputs = append(c.Req.Inputs, t)
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
func checkGenerateInputs(c *Call, cfg *inferencepb.ModelConfig) error {
	required := 0
	var missing []string
	for _, in := range cfg.GetInput() {
		if in.GetOptional() || sequenceSupplied(cfg, in.GetName()) {
			continue
		}
		required++
		if c.Req.Input(in.GetName()) == nil {
			missing = append(missing, "'"+in.GetName()+"'")
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return inference.InvalidArg("expected %d inputs but got %d inputs for model '%s'. Missing required input(s) [%s]",
		required, len(c.Req.Inputs), c.Req.ModelName, strings.Join(missing, ", "))
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
