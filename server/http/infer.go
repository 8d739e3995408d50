package httpfront

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/jsonw"
	"github.com/nereid-project/nereid/payload"
)

const headerInferHeaderLength = "Inference-Header-Content-Length"

// inferHeaders are the request headers the infer endpoint reads, found in
// one pass and case-insensitively (header names are not normalised, so
// that forwarded headers keep the client's spelling).
type inferHeaders struct {
	hdrLen          []byte
	hasHdrLen       bool
	contentEncoding []byte
	acceptEncoding  []byte
}

func scanInferHeaders(ctx *fasthttp.RequestCtx) inferHeaders {
	var h inferHeaders
	for k, v := range ctx.Request.Header.All() {
		switch {
		case len(k) == len(headerInferHeaderLength) && bytes.EqualFold(k, []byte(headerInferHeaderLength)):
			h.hdrLen, h.hasHdrLen = v, true
		case bytes.EqualFold(k, []byte("Content-Encoding")):
			h.contentEncoding = v
		case bytes.EqualFold(k, []byte("Accept-Encoding")):
			h.acceptEncoding = v
		}
	}
	return h
}

// errDecoupled is Triton's answer to /infer for a decoupled model, which
// only generate and gRPC streaming serve.
var errDecoupled = inference.Unsupported("HTTP end point doesn't support models with decoupled transaction policy")

func (s *Server) getCall() *inferCall {
	if c, ok := s.callPool.Get().(*inferCall); ok {
		return c
	}
	return &inferCall{}
}

func (s *Server) putCall(c *inferCall) {
	if c.abandoned {
		return
	}
	c.reset()
	s.callPool.Put(c)
}

// infer serves POST /v2/models/{m}[/versions/{v}]/infer.
func (s *Server) infer(ctx *fasthttp.RequestCtx, rt route) {
	arrival := time.Now()
	version, err := modelVersion(rt.version)
	if err != nil {
		respondErr(ctx, err)
		return
	}
	h := scanInferHeaders(ctx)
	body := ctx.PostBody()
	if len(body) > s.opts.MaxInputSize {
		writeError(ctx, fasthttp.StatusBadRequest, tooLargeMessage(len(body), s.opts.MaxInputSize))
		return
	}
	switch enc := string(h.contentEncoding); enc {
	case "", "identity":
	case "gzip", "deflate":
		if enc == "gzip" {
			body, err = ctx.Request.BodyGunzipWithLimit(s.opts.MaxInputSize)
		} else {
			body, err = ctx.Request.BodyInflateWithLimit(s.opts.MaxInputSize)
		}
		if errors.Is(err, fasthttp.ErrBodyTooLarge) {
			writeError(ctx, fasthttp.StatusBadRequest, "decompressed request body exceeds the maximum allowed value of "+
				strconv.Itoa(s.opts.MaxInputSize)+" bytes; use --http-max-input-size to increase the limit")
			return
		}
		if err != nil {
			writeError(ctx, fasthttp.StatusBadRequest, "failed to decompress the "+enc+" request body: "+err.Error())
			return
		}
		if err := s.opts.PayloadBudget.Acquire(int64(len(body))); err != nil {
			respondErr(ctx, err)
			return
		}
		defer s.opts.PayloadBudget.Release(int64(len(body)))
	default:
		ctx.Response.Header.Set("Accept-Encoding", "gzip, deflate")
		writeError(ctx, fasthttp.StatusNotImplemented, "Unsupported compression type")
		return
	}

	hdrLen := len(body)
	if h.hasHdrLen {
		n, err := strconv.Atoi(strings.TrimSpace(string(h.hdrLen)))
		if err != nil || n < 0 || n > len(body) {
			writeError(ctx, fasthttp.StatusBadRequest, "inference header size should be in range (0, "+
				strconv.Itoa(len(body))+"), got: "+string(h.hdrLen))
			return
		}
		hdrLen = n
	}

	c := s.getCall()
	defer s.putCall(c)
	c.req.ModelName = rt.model
	c.req.ModelVersion = version
	c.req.Arrival = arrival
	if h.hasHdrLen && hdrLen == 0 {
		// Only the raw form needs the configuration, for the shape and
		// datatype of the model's one input. The core refuses unknown
		// and decoupled models for the other forms.
		cfg, cerr := s.core.ModelConfig(s.baseCtx, rt.model, version)
		if err = cerr; err == nil {
			err = decodeRaw(c, body, cfg)
		}
	} else {
		err = decodeInferJSON(c, body[:hdrLen], body[hdrLen:])
	}
	if err == nil && s.opts.HeaderForwardPattern != nil {
		err = s.forwardHeaders(ctx, c)
	}
	if err != nil {
		s.log.Debug().Err(err).Str("model", rt.model).Msg("HTTP infer request refused")
		respondErr(ctx, err)
		return
	}

	tr := s.sampleTrace(rt.model)
	defer tr.Finish()
	tr.Attach(&c.req)
	tr.Record("HTTP_RECV_START", arrival)
	start := time.Now()
	tr.Record("HTTP_RECV_END", start)
	resp, err := s.runInfer(ctx, c)
	tr.Request(&c.req, resp, start, time.Now())
	if err == nil && resp == nil {
		err = inference.Internal("model '%s' returned no response", rt.model)
	}
	if err != nil {
		resp.Done()
		s.log.Debug().Err(err).Str("model", rt.model).Str("id", c.req.ID).Msg("infer failed")
		respondErr(ctx, err)
		return
	}
	tr.Record("HTTP_SEND_START", time.Now())
	s.writeInferResponse(ctx, c, resp, responseEncoding(h.acceptEncoding))
	resp.Done() // written into the response body
	tr.Record("HTTP_SEND_END", time.Now())
}

// runInfer hands the decoded request to the core under a context that
// the disconnect watch cancels if the client goes away while it runs.
func (s *Server) runInfer(ctx *fasthttp.RequestCtx, c *inferCall) (*inference.Response, error) {
	rctx := c.context(s.requestParent)
	c.watch.start(s.baseCtx, ctx.Conn(), c.cancel, s.watchHook)
	resp, err := s.core.Infer(rctx, &c.req)
	c.watch.stop()
	if err != nil && rctx.Err() != nil {
		// Cancelled: the core returned without waiting for the
		// backend, which may still read the request and its inputs.
		// Leave both to it: the call object is not reused, nor is the
		// body buffer the inputs alias.
		c.abandoned = true
		ctx.Request.SwapBody(nil)
	}
	if err != nil && errors.Is(err, inference.ErrDecoupled) {
		err = errDecoupled // Triton's text for HTTP
	}
	return resp, err
}

// forwardHeaders adds the headers matching --http-header-forward-pattern as
// string parameters.
func (s *Server) forwardHeaders(ctx *fasthttp.RequestCtx, c *inferCall) error {
	re := s.opts.HeaderForwardPattern
	for k, v := range ctx.Request.Header.All() {
		if !re.Match(k) {
			continue
		}
		if reservedHeaderParam(k) {
			return inference.InvalidArg("header '%s' names a parameter reserved for Triton usage and should not be specified", k)
		}
		c.param(string(k), string(v))
	}
	return nil
}

// responseEncoding picks the response compression from Accept-Encoding as
// Triton does: the highest-weighted of identity, gzip and deflate, the
// first on a tie; anything else is ignored.
func responseEncoding(accept []byte) string {
	if len(accept) == 0 {
		return ""
	}
	best, weight := "identity", 0.0
	for part := range strings.SplitSeq(string(accept), ",") {
		typ, q, hasQ := strings.Cut(part, ";q=")
		typ = strings.TrimSpace(typ)
		if typ == "" {
			continue
		}
		w := 1.0
		if hasQ {
			var err error
			if w, err = strconv.ParseFloat(strings.TrimSpace(q), 64); err != nil {
				continue
			}
		}
		if (typ == "identity" || typ == "gzip" || typ == "deflate") && w > weight {
			best, weight = typ, w
		}
	}
	if best == "identity" {
		return ""
	}
	return best
}

var scratchPool sync.Pool // *[]byte, for compressed bodies

// writeInferResponse encodes resp into the response body, compressing it
// when the client asked for it.
func (s *Server) writeInferResponse(ctx *fasthttp.RequestCtx, c *inferCall, resp *inference.Response, encoding string) {
	buf := ctx.Response.SwapBody(nil)[:0]
	buf, hdrLen, binary, err := appendInferResponse(buf, c, resp)
	if err != nil {
		ctx.Response.SwapBody(buf)
		respondErr(ctx, err)
		return
	}
	if encoding != "" {
		zp, _ := scratchPool.Get().(*[]byte)
		if zp == nil {
			zp = new([]byte)
		}
		z := *zp
		if encoding == "gzip" {
			z = fasthttp.AppendGzipBytesLevel(z[:0], buf, fasthttp.CompressDefaultCompression)
		} else {
			z = fasthttp.AppendDeflateBytesLevel(z[:0], buf, fasthttp.CompressDefaultCompression)
		}
		*zp = buf
		scratchPool.Put(zp)
		buf = z
		ctx.Response.Header.Set("Content-Encoding", encoding)
	}
	if binary {
		ctx.SetContentType(contentTypeBinary)
		ctx.Response.Header.Set(headerInferHeaderLength, strconv.Itoa(hdrLen))
	} else {
		ctx.SetContentType(contentTypeJSON)
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.Response.SwapBody(buf)
}

// keptBodyLimit is the largest request or response body buffer a
// connection keeps for its next request, which then reads or writes into
// it instead of a new one (set in New with fasthttp.SetBodySizePoolLimit).
// Larger ones go back to the heap once the response is written, so that a
// connection does not hold a large payload's memory for as long as it
// stays open.
const keptBodyLimit = payload.LargeSize

// appendInferResponse writes the JSON header of an inference response and
// then the data of its binary outputs. It returns the header length and
// whether any binary data follows it.
func appendInferResponse(dst []byte, c *inferCall, resp *inference.Response) ([]byte, int, bool, error) {
	start := len(dst)
	dst = append(dst, '{')
	id := resp.ID
	if id == "" {
		id = c.req.ID
	}
	if id != "" {
		dst = append(dst, `"id":`...)
		dst = jsonw.AppendString(dst, id)
		dst = append(dst, ',')
	}
	name := resp.ModelName
	if name == "" {
		name = c.req.ModelName
	}
	dst = append(dst, `"model_name":`...)
	dst = jsonw.AppendString(dst, name)
	dst = append(dst, `,"model_version":`...)
	dst = jsonw.AppendString(dst, resp.ModelVersion)
	if len(resp.Parameters) > 0 {
		dst = append(dst, `,"parameters":`...)
		dst = jsonw.AppendParameters(dst, resp.Parameters)
	}
	dst = append(dst, `,"outputs":[`...)
	c.binOuts = c.binOuts[:0]
	for i := range resp.Outputs {
		t := &resp.Outputs[i]
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"name":`...)
		dst = jsonw.AppendString(dst, t.Name)
		dst = append(dst, `,"datatype":`...)
		dst = jsonw.AppendString(dst, t.DataType.String())
		dst = append(dst, `,"shape":`...)
		dst = appendInt64Array(dst, t.Shape)
		switch c.kindFor(t.Name) {
		case kindShm:
			// The data is in the client's shared-memory region: like
			// Triton, the output carries no data.
			if len(t.Parameters) > 0 {
				dst = append(dst, `,"parameters":`...)
				dst = jsonw.AppendParameters(dst, t.Parameters)
			}
		case kindBinary:
			dst = append(dst, `,"parameters":{"binary_data_size":`...)
			dst = strconv.AppendInt(dst, int64(len(t.Data)), 10)
			dst = appendMoreParameters(dst, t.Parameters)
			dst = append(dst, '}')
			if len(t.Data) > 0 {
				c.binOuts = append(c.binOuts, i)
			}
		default:
			if len(t.Parameters) > 0 {
				dst = append(dst, `,"parameters":`...)
				dst = jsonw.AppendParameters(dst, t.Parameters)
			}
			dst = append(dst, `,"data":[`...)
			var err error
			if dst, err = appendTensorData(dst, t); err != nil {
				return dst, 0, false, err
			}
			dst = append(dst, ']')
		}
		dst = append(dst, '}')
	}
	dst = append(dst, "]}"...)
	hdrLen := len(dst) - start
	// Grow once to the final size: appending tensor after tensor would
	// reallocate a large body several times.
	n := 0
	for _, i := range c.binOuts {
		n += len(resp.Outputs[i].Data)
	}
	dst = slices.Grow(dst, n)
	for _, i := range c.binOuts {
		dst = append(dst, resp.Outputs[i].Data...)
	}
	return dst, hdrLen, len(c.binOuts) > 0, nil
}

// appendMoreParameters continues an open parameters object with p's
// members, leaving out binary_data_size, which the encoder writes.
func appendMoreParameters(dst []byte, p inference.Parameters) []byte {
	if len(p) == 0 {
		return dst
	}
	for _, k := range jsonw.SortedKeys(p) {
		if k == "binary_data_size" {
			continue
		}
		dst = append(dst, ',')
		dst = jsonw.AppendString(dst, k)
		dst = append(dst, ':')
		dst = jsonw.AppendParamValue(dst, p[k])
	}
	return dst
}

const errOutputSize = "output tensor shape does not match size of output for '"

// appendTensorData writes the elements of t as a flat JSON list.
func appendTensorData(dst []byte, t *inference.Tensor) ([]byte, error) {
	count := inference.ElementCount(t.Shape)
	if count < 0 {
		return dst, inference.Internal("output '%s' has an invalid shape %v", t.Name, t.Shape)
	}
	dt := t.DataType
	switch dt {
	case inference.FP16, inference.BF16:
		return dst, inference.InvalidArg("sending %s data via JSON is not supported. Please use the binary data format for output", dt)
	case inference.Bytes:
		return appendBytesData(dst, t, count)
	default:
	}
	if !dt.Valid() {
		return dst, inference.InvalidArg("Invalid data type for output tensor")
	}
	size := dt.Size()
	if int64(len(t.Data)) != count*int64(size) {
		return dst, inference.Internal("%s%s'", errOutputSize, t.Name)
	}
	d := t.Data
	for i := 0; i < len(d); i += size {
		if i > 0 {
			dst = append(dst, ',')
		}
		switch dt {
		case inference.Bool:
			dst = strconv.AppendBool(dst, d[i] != 0)
		case inference.Uint8:
			dst = strconv.AppendUint(dst, uint64(d[i]), 10)
		case inference.Uint16:
			dst = strconv.AppendUint(dst, uint64(binary.LittleEndian.Uint16(d[i:])), 10)
		case inference.Uint32:
			dst = strconv.AppendUint(dst, uint64(binary.LittleEndian.Uint32(d[i:])), 10)
		case inference.Uint64:
			dst = strconv.AppendUint(dst, binary.LittleEndian.Uint64(d[i:]), 10)
		case inference.Int8:
			dst = strconv.AppendInt(dst, int64(int8(d[i])), 10)
		case inference.Int16:
			dst = strconv.AppendInt(dst, int64(int16(binary.LittleEndian.Uint16(d[i:]))), 10)
		case inference.Int32:
			dst = strconv.AppendInt(dst, int64(int32(binary.LittleEndian.Uint32(d[i:]))), 10)
		case inference.Int64:
			dst = strconv.AppendInt(dst, int64(binary.LittleEndian.Uint64(d[i:])), 10)
		case inference.FP32:
			dst = jsonw.AppendFloat(dst, float64(math.Float32frombits(binary.LittleEndian.Uint32(d[i:]))))
		case inference.FP64:
			dst = jsonw.AppendFloat(dst, math.Float64frombits(binary.LittleEndian.Uint64(d[i:])))
		default: // FP16, BF16, BYTES and invalid types are handled above
		}
	}
	return dst, nil
}

func appendBytesData(dst []byte, t *inference.Tensor, count int64) ([]byte, error) {
	d := t.Data
	off := 0
	for e := int64(0); e < count; e++ {
		if len(d)-off < 4 {
			return dst, inference.Internal("%s%s'", errOutputSize, t.Name)
		}
		l := binary.LittleEndian.Uint32(d[off:])
		off += 4
		if uint64(l) > uint64(len(d)-off) {
			return dst, inference.Internal("%s%s'", errOutputSize, t.Name)
		}
		if e > 0 {
			dst = append(dst, ',')
		}
		dst = jsonw.AppendString(dst, d[off:off+int(l)])
		off += int(l)
	}
	return dst, nil
}
