package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"

	"github.com/valyala/fasthttp"
)

const headerLength = "Inference-Header-Content-Length"

var serverMetadataJSON = []byte(`{"name":"ceiling","version":"0.0.0","extensions":["binary_tensor_data"]}`)

// httpFront is the KServe v2 REST front end: health, metadata, config and
// infer with JSON or binary tensor data.
type httpFront struct {
	models map[string]*model
	calls  sync.Pool // *httpCall
}

// httpCall is the per-request state, reused through a pool.
type httpCall struct {
	req     jsonRequest
	bufs    [][]byte  // data of input i of the model (then of output i)
	shapes  [][]int64 // shape of input i
	scratch [][]byte  // decoded JSON data of input i
	sel     []int     // outputs to return
	bin     []bool    // whether output sel[j] is returned as binary data
	out     []byte
	num     []byte
}

func newHTTPFront(ms map[string]*model) *httpFront {
	return &httpFront{models: ms, calls: sync.Pool{New: func() any { return new(httpCall) }}}
}

func (h *httpFront) handle(ctx *fasthttp.RequestCtx) {
	path := ctx.Path()
	switch string(path) {
	case "/v2/health/live", "/v2/health/ready":
		return
	case "/v2":
		ctx.SetContentType("application/json")
		ctx.SetBody(serverMetadataJSON)
		return
	}
	const prefix = "/v2/models/"
	if !hasPrefix(path, prefix) {
		httpError(ctx, fasthttp.StatusNotFound, "Not Found")
		return
	}
	name, rest := cut(path[len(prefix):])
	m := h.models[string(name)]
	if m == nil {
		httpError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("Request for unknown model: '%s' is not found", name))
		return
	}
	if hasPrefix(rest, "versions/") {
		var version []byte
		version, rest = cut(rest[len("versions/"):])
		if string(version) != "1" {
			httpError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("Request for unknown model: '%s' version %s is not found", name, version))
			return
		}
	}
	switch string(rest) {
	case "":
		ctx.SetContentType("application/json")
		ctx.SetBody(m.metadataJSON)
	case "ready":
	case "config":
		ctx.SetContentType("application/json")
		ctx.SetBody(m.configJSON)
	case "infer":
		if !ctx.IsPost() {
			httpError(ctx, fasthttp.StatusMethodNotAllowed, "Method Not Allowed")
			return
		}
		c := h.calls.Get().(*httpCall)
		if err := c.infer(ctx, m); err != nil {
			httpError(ctx, fasthttp.StatusBadRequest, err.Error())
		}
		clear(c.bufs) // drop the references to the request body
		h.calls.Put(c)
	default:
		httpError(ctx, fasthttp.StatusNotFound, "Not Found")
	}
}

// cut splits "a/b/c" into "a" and "b/c".
func cut(b []byte) (before, after []byte) {
	for i, c := range b {
		if c == '/' {
			return b[:i], b[i+1:]
		}
	}
	return b, nil
}

func httpError(ctx *fasthttp.RequestCtx, status int, msg string) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBodyString(`{"error":` + strconv.Quote(msg) + `}`)
}

// infer decodes the request, computes in place and encodes the response.
func (c *httpCall) infer(ctx *fasthttp.RequestCtx, m *model) error {
	body := ctx.PostBody()
	hdrLen := len(body)
	if v := ctx.Request.Header.Peek(headerLength); len(v) > 0 {
		n, err := strconv.Atoi(unsafeString(v))
		if err != nil || n < 0 || n > len(body) {
			return fmt.Errorf("invalid %s header: %s", headerLength, v)
		}
		hdrLen = n
	}
	if err := c.req.parse(body[:hdrLen]); err != nil {
		return err
	}
	if err := c.decodeInputs(m, body[hdrLen:]); err != nil {
		return err
	}
	m.compute(c.bufs)
	if err := c.selectOutputs(m); err != nil {
		return err
	}
	hl := c.encode(m)
	if hl < len(c.out) {
		c.num = strconv.AppendInt(c.num[:0], int64(hl), 10)
		ctx.Response.Header.SetBytesV(headerLength, c.num)
		ctx.SetContentType("application/octet-stream")
	} else {
		ctx.SetContentType("application/json")
	}
	ctx.SetBody(c.out)
	return nil
}

// decodeInputs fills c.bufs and c.shapes in the model's input order.
func (c *httpCall) decodeInputs(m *model, bin []byte) error {
	n := len(m.inputs)
	if len(c.req.inputs) != n {
		return fmt.Errorf("expected %d inputs but got %d inputs for model '%s'", n, len(c.req.inputs), m.name)
	}
	c.bufs = resize(c.bufs, n)
	c.shapes = resize(c.shapes, n)
	c.scratch = resize(c.scratch, n)
	clear(c.bufs)
	for k := range c.req.inputs {
		in := &c.req.inputs[k]
		i := m.inputIndex(in.name)
		if i < 0 || c.bufs[i] != nil {
			return fmt.Errorf("unexpected inference input '%s' for model '%s'", in.name, m.name)
		}
		size, err := m.checkInput(i, in.datatype, in.shape)
		if err != nil {
			return err
		}
		c.shapes[i] = in.shape
		switch {
		case in.binarySize >= 0:
			if in.binarySize != size || len(bin) < size {
				return fmt.Errorf("unexpected binary data size for input '%s'", in.name)
			}
			c.bufs[i], bin = bin[:size:size], bin[size:]
		case in.data != nil:
			s := scanner{b: in.data}
			c.scratch[i] = s.appendData(c.scratch[i][:0], m.inputs[i].datatype, 0)
			if s.bad || len(c.scratch[i]) != size {
				return fmt.Errorf("unable to parse 'data' of input '%s'", in.name)
			}
			c.bufs[i] = c.scratch[i]
		default:
			return fmt.Errorf("input '%s' has no data", in.name)
		}
	}
	if len(bin) != 0 {
		return errors.New("unexpected additional input data")
	}
	for i := 1; i < n; i++ {
		if len(c.bufs[i]) != len(c.bufs[0]) {
			return fmt.Errorf("inputs of model '%s' must have the same shape", m.name)
		}
	}
	return nil
}

// selectOutputs picks the outputs to return and their encoding: those the
// request names, else all; binary when the output's binary_data or else the
// request's binary_data_output says so.
func (c *httpCall) selectOutputs(m *model) error {
	c.sel, c.bin = c.sel[:0], c.bin[:0]
	if len(c.req.outputs) == 0 {
		for i := range m.outputs {
			c.sel = append(c.sel, i)
			c.bin = append(c.bin, c.req.binaryOutput)
		}
		return nil
	}
	for _, o := range c.req.outputs {
		i := m.outputIndex(o.name)
		if i < 0 {
			return fmt.Errorf("unexpected inference output '%s' for model '%s'", o.name, m.name)
		}
		c.sel = append(c.sel, i)
		c.bin = append(c.bin, o.binary == 1 || (o.binary == -1 && c.req.binaryOutput))
	}
	return nil
}

// encode writes the response into c.out: the JSON object, then the binary
// outputs. It returns the JSON object's length.
func (c *httpCall) encode(m *model) int {
	b := append(c.out[:0], '{')
	if c.req.hasID {
		b = append(b, `"id":"`...)
		b = append(b, c.req.id...)
		b = append(b, `",`...)
	}
	b = append(b, `"model_name":"`...)
	b = append(b, m.name...)
	b = append(b, `","model_version":"1","outputs":[`...)
	for j, i := range c.sel {
		if j > 0 {
			b = append(b, ',')
		}
		t := &m.outputs[i]
		b = append(b, `{"name":"`...)
		b = append(b, t.name...)
		b = append(b, `","datatype":"`...)
		b = append(b, t.datatype...)
		b = append(b, `","shape":`...)
		b = appendInts(b, c.shapes[i])
		if c.bin[j] {
			b = append(b, `,"parameters":{"binary_data_size":`...)
			b = strconv.AppendInt(b, int64(len(c.bufs[i])), 10)
			b = append(b, "}}"...)
		} else {
			b = append(b, `,"data":`...)
			b = append(appendJSONData(b, t.datatype, c.bufs[i]), '}')
		}
	}
	b = append(b, "]}"...)
	hl := len(b)
	for j, i := range c.sel {
		if c.bin[j] {
			b = append(b, c.bufs[i]...)
		}
	}
	c.out = b
	return hl
}

// appendJSONData appends little-endian tensor data as a flat JSON array.
func appendJSONData(b []byte, datatype string, data []byte) []byte {
	b = append(b, '[')
	le := binary.LittleEndian
	for i := 0; i+4 <= len(data); i += 4 {
		if i > 0 {
			b = append(b, ',')
		}
		if datatype == "FP32" {
			b = strconv.AppendFloat(b, float64(math.Float32frombits(le.Uint32(data[i:]))), 'g', -1, 32)
		} else {
			b = strconv.AppendInt(b, int64(int32(le.Uint32(data[i:]))), 10)
		}
	}
	return append(b, ']')
}

// resize returns s with length n, reusing its array when it is large enough.
func resize[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}
