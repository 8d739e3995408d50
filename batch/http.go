package batch

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/jsonw"
	"github.com/nereid-project/nereid/server/v2wire"
)

// HTTPOptions configures the remote target.
type HTTPOptions struct {
	// Client sends the requests; default: a client that keeps MaxConns
	// connections open.
	Client *http.Client
	// MaxConns is the idle connections kept to the server: the job's
	// concurrency (default 4).
	MaxConns int
	// Retries is how many times a request that failed in transport or
	// with 503 (a full queue, a model not yet loaded) is sent again,
	// after 50 ms, 100 ms, …; default 2, negative for none.
	Retries int
}

// NewHTTP returns a target that sends requests to a Nereid or Triton
// server's KServe v2 HTTP endpoint at base (http://host:port): inputs and
// outputs as binary tensor data after the JSON header.
func NewHTTP(base string, opts HTTPOptions) (Target, error) {
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("--url: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("--url: %q is not http://host:port", base)
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = DefaultMaxConcurrency
	}
	if opts.Retries == 0 {
		opts.Retries = 2
	}
	if opts.Client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = opts.MaxConns
		tr.MaxIdleConns = opts.MaxConns
		opts.Client = &http.Client{Transport: tr}
	}
	return &httpTarget{base: strings.TrimSuffix(u.String(), "/"), opts: opts}, nil
}

type httpTarget struct {
	base string
	opts HTTPOptions
}

var _ Target = (*httpTarget)(nil)

func (t *httpTarget) modelPath(name, version string) string {
	p := t.base + "/v2/models/" + url.PathEscape(name)
	if version != "" {
		p += "/versions/" + url.PathEscape(version)
	}
	return p
}

// configJSON is the part of GET …/config a job reads. Triton and Nereid
// write dims as numbers; protobuf's JSON mapping as strings.
type configJSON struct {
	MaxBatchSize int `json:"max_batch_size"`
	Policy       struct {
		Decoupled bool `json:"decoupled"`
	} `json:"model_transaction_policy"`
	Input []struct {
		Name     string      `json:"name"`
		DataType string      `json:"data_type"`
		Dims     []flexInt64 `json:"dims"`
		Optional bool        `json:"optional"`
	} `json:"input"`
}

type flexInt64 int64

func (f *flexInt64) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	v, err := strconv.ParseInt(s, 10, 64)
	*f = flexInt64(v)
	return err
}

func (t *httpTarget) Model(ctx context.Context, name, version string) (*Model, error) {
	body, _, err := t.do(ctx, http.MethodGet, t.modelPath(name, version)+"/config", nil, nil)
	if err != nil {
		return nil, err
	}
	var cfg configJSON
	if err := json.Unmarshal(body, &cfg); err != nil {
		return nil, fmt.Errorf("the model configuration from %s: %w", t.base, err)
	}
	if cfg.Policy.Decoupled {
		return nil, errDecoupled(name)
	}
	m := &Model{Name: name, Version: version, MaxBatchSize: cfg.MaxBatchSize}
	for _, in := range cfg.Input {
		typ := strings.TrimPrefix(in.DataType, "TYPE_")
		if typ == "STRING" {
			typ = "BYTES"
		}
		dt, ok := inference.ParseDataType(typ)
		if !ok {
			return nil, fmt.Errorf("model '%s': input '%s' has data type %s, which a batch job cannot send", name, in.Name, in.DataType)
		}
		dims := make([]int64, len(in.Dims))
		for i, d := range in.Dims {
			dims[i] = int64(d)
		}
		m.Inputs = append(m.Inputs, Input{Name: in.Name, DataType: dt, Dims: dims, Optional: in.Optional})
	}
	if len(m.Inputs) == 0 {
		return nil, fmt.Errorf("model '%s' has no inputs", name)
	}
	return m, nil
}

func (t *httpTarget) Infer(ctx context.Context, req *inference.Request) (*inference.Response, error) {
	hdr, body := encodeRequest(req)
	resp, header, err := t.do(ctx, http.MethodPost, t.modelPath(req.ModelName, req.ModelVersion)+"/infer", body,
		http.Header{"Inference-Header-Content-Length": {strconv.Itoa(hdr)}, "Content-Type": {"application/octet-stream"}})
	if err != nil {
		return nil, err
	}
	hlen := len(resp)
	if v := header.Get("Inference-Header-Content-Length"); v != "" {
		if hlen, err = strconv.Atoi(v); err != nil || hlen < 0 || hlen > len(resp) {
			return nil, inference.Internal("the server sent Inference-Header-Content-Length %q for a body of %d bytes", v, len(resp))
		}
	}
	return decodeResponse(resp[:hlen], resp[hlen:])
}

// encodeRequest writes a KServe v2 request with binary tensor data: the
// JSON header, then each input's data. It returns the header's length.
func encodeRequest(req *inference.Request) (int, []byte) {
	n := 256
	for i := range req.Inputs {
		n += 96 + len(req.Inputs[i].Data)
	}
	b := make([]byte, 0, n)
	b = append(b, '{')
	if req.ID != "" {
		b = append(b, `"id":`...)
		b = jsonw.AppendString(b, req.ID)
		b = append(b, ',')
	}
	params := inference.Parameters{"binary_data_output": true}
	for k, v := range req.Parameters {
		params[k] = v
	}
	b = append(b, `"parameters":`...)
	b = jsonw.AppendParameters(b, params)
	b = append(b, `,"inputs":[`...)
	for i := range req.Inputs {
		t := &req.Inputs[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"name":`...)
		b = jsonw.AppendString(b, t.Name)
		b = append(b, `,"datatype":"`...)
		b = append(b, t.DataType.String()...)
		b = append(b, `","shape":`...)
		b = v2wire.AppendInt64Array(b, t.Shape)
		b = append(b, `,"parameters":{"binary_data_size":`...)
		b = strconv.AppendInt(b, int64(len(t.Data)), 10)
		b = append(b, "}}"...)
	}
	b = append(b, ']')
	if len(req.Outputs) > 0 {
		b = append(b, `,"outputs":[`...)
		for i, o := range req.Outputs {
			if i > 0 {
				b = append(b, ',')
			}
			p := inference.Parameters{"binary_data": true}
			for k, v := range o.Parameters {
				p[k] = v
			}
			b = append(b, `{"name":`...)
			b = jsonw.AppendString(b, o.Name)
			b = append(b, `,"parameters":`...)
			b = jsonw.AppendParameters(b, p)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	b = append(b, '}')
	hdr := len(b)
	for i := range req.Inputs {
		b = append(b, req.Inputs[i].Data...)
	}
	return hdr, b
}

// decodeResponse reads a KServe v2 response: its "outputs" are tensors
// of the same form as a request's inputs, which the server's decoder
// reads, binary data included.
func decodeResponse(hdr, bin []byte) (*inference.Response, error) {
	resp := &inference.Response{}
	var outputs []byte
	r := v2wire.NewReader(hdr)
	err := r.Object(func(key []byte) error {
		switch string(key) {
		case "id", "model_name", "model_version":
			s, err := r.ReadString()
			switch string(key) {
			case "id":
				resp.ID = string(s)
			case "model_name":
				resp.ModelName = string(s)
			default:
				resp.ModelVersion = string(s)
			}
			return err
		case "outputs":
			start, end, err := r.Span()
			outputs = hdr[start:end]
			return err
		default:
			return r.SkipValue()
		}
	})
	if err != nil {
		return nil, inference.Internal("the server's response: %v", err)
	}
	if outputs == nil {
		return nil, inference.Internal("the server's response has no outputs")
	}
	c := new(v2wire.Call)
	doc := append(append([]byte(`{"inputs":`), outputs...), '}')
	if err := v2wire.DecodeJSON(c, doc, bin); err != nil {
		return nil, inference.Internal("the server's response: %v", err)
	}
	for i := range c.Req.Inputs {
		// A tensor without data (a shared-memory output) is not one a
		// job asked for.
		if err := c.Req.Inputs[i].ValidateData(); err != nil {
			return nil, inference.Internal("the server's response: output '%s': %v", c.Req.Inputs[i].Name, err)
		}
	}
	resp.Outputs = c.Req.Inputs
	return resp, nil
}

// do sends one request, again on a transport error or a 503, and
// returns the body of a 200; any other status is an error with the
// server's message and the status's class.
func (t *httpTarget) do(ctx context.Context, method, u string, body []byte, h http.Header) ([]byte, http.Header, error) {
	delay := 50 * time.Millisecond
	for attempt := 0; ; attempt++ {
		b, header, retry, err := t.once(ctx, method, u, body, h)
		if !retry || attempt >= t.opts.Retries || ctx.Err() != nil {
			return b, header, err
		}
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, nil, ctx.Err()
		case <-timer.C:
		}
		delay *= 2
	}
}

func (t *httpTarget) once(ctx context.Context, method, u string, body []byte, h http.Header) (_ []byte, _ http.Header, retry bool, _ error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, nil, false, err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := t.opts.Client.Do(req)
	if err != nil {
		return nil, nil, true, inference.Unavailable("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, true, inference.Unavailable("%s %s: reading the response: %v", method, u, err)
	}
	if resp.StatusCode == http.StatusOK {
		return b, resp.Header, false, nil
	}
	var e struct {
		Error string `json:"error"`
	}
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	if msg == "" {
		msg = resp.Status
	}
	return nil, nil, resp.StatusCode == http.StatusServiceUnavailable, inference.Errorf(statusCode(resp.StatusCode), "%s", msg)
}

// statusCode maps an HTTP status to the failure class Triton's front end
// maps to it.
func statusCode(status int) inference.Code {
	switch status {
	case http.StatusBadRequest:
		return inference.CodeInvalidArg
	case http.StatusNotFound:
		return inference.CodeNotFound
	case http.StatusNotImplemented:
		return inference.CodeUnsupported
	case http.StatusServiceUnavailable:
		return inference.CodeUnavailable
	default:
		return inference.CodeInternal
	}
}
