package analyze

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

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// HTTP is a target that drives a running Nereid or Triton over the KServe
// v2 HTTP protocol: inference with binary tensor data, the model
// configuration and statistics endpoints, and the repository extension's
// load with a configuration override (which needs explicit model
// control).
type HTTP struct {
	base   string // http://host:port
	client *http.Client
}

var _ Target = (*HTTP)(nil)

// NewHTTP returns a target for the server at addr (host:port, or a URL
// with the http scheme). Its client keeps up to maxConns connections
// open, one per concurrent request.
func NewHTTP(addr string, maxConns int) (*HTTP, error) {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil {
		return nil, fmt.Errorf("--url %q: %w", addr, err)
	}
	if u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("--url %q: want host:port or http://host:port", addr)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = max(maxConns, 1) + 4
	tr.MaxIdleConnsPerHost = max(maxConns, 1) + 4
	tr.DisableCompression = true
	return &HTTP{base: "http://" + u.Host, client: &http.Client{Transport: tr}}, nil
}

// Close closes the idle connections.
func (t *HTTP) Close() { t.client.CloseIdleConnections() }

// Name implements Target.
func (t *HTTP) Name() string { return t.base }

// Config implements Target.
func (t *HTTP) Config(ctx context.Context, model string) (*inferencepb.ModelConfig, error) {
	body, err := t.do(ctx, http.MethodGet, "/v2/models/"+url.PathEscape(model)+"/config", nil, nil)
	if err != nil {
		return nil, err
	}
	cfg := &inferencepb.ModelConfig{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(body, cfg); err != nil {
		return nil, fmt.Errorf("the model configuration the server sent: %w", err)
	}
	return cfg, nil
}

// Load implements Target: POST /v2/repository/models/{m}/load, with
// {"parameters":{"config":"<json>"}} for a configuration.
func (t *HTTP) Load(ctx context.Context, model string, cfg *inferencepb.ModelConfig) error {
	req := []byte("{}")
	if cfg != nil {
		js, err := configJSON(cfg)
		if err != nil {
			return err
		}
		if req, err = json.Marshal(map[string]any{"parameters": map[string]string{"config": js}}); err != nil {
			return err
		}
	}
	_, err := t.do(ctx, http.MethodPost, "/v2/repository/models/"+url.PathEscape(model)+"/load", req, nil)
	return err
}

// Memory implements Target from GET /v2/models/{m}/stats.
func (t *HTTP) Memory(ctx context.Context, model string) (int64, error) {
	body, err := t.do(ctx, http.MethodGet, "/v2/models/"+url.PathEscape(model)+"/stats", nil, nil)
	if err != nil {
		return 0, err
	}
	var st struct {
		ModelStats []struct {
			MemoryUsage []struct {
				ByteSize uint64 `json:"byte_size"`
			} `json:"memory_usage"`
		} `json:"model_stats"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return 0, fmt.Errorf("the statistics the server sent: %w", err)
	}
	var n int64
	for _, m := range st.ModelStats {
		for _, u := range m.MemoryUsage {
			n += int64(u.ByteSize)
		}
	}
	return n, nil
}

// Caller implements Target: the request body is encoded once, in the
// binary tensor data extension (a JSON header, then the raw tensors), and
// the outputs are asked for in binary too, so that JSON number formatting
// is not what is measured.
func (t *HTTP) Caller(model string, inputs []inference.Tensor) (Caller, error) {
	type tensorHeader struct {
		Name       string         `json:"name"`
		Datatype   string         `json:"datatype"`
		Shape      []int64        `json:"shape"`
		Parameters map[string]int `json:"parameters"`
	}
	hdr := struct {
		Inputs     []tensorHeader  `json:"inputs"`
		Parameters map[string]bool `json:"parameters"`
	}{Parameters: map[string]bool{"binary_data_output": true}}
	var data []byte
	for _, in := range inputs {
		hdr.Inputs = append(hdr.Inputs, tensorHeader{
			Name: in.Name, Datatype: in.DataType.String(), Shape: in.Shape,
			Parameters: map[string]int{"binary_data_size": len(in.Data)},
		})
		data = append(data, in.Data...)
	}
	js, err := json.Marshal(hdr)
	if err != nil {
		return nil, err
	}
	body := append(js, data...)
	headers := http.Header{
		"Content-Type":                    {"application/octet-stream"},
		"Inference-Header-Content-Length": {strconv.Itoa(len(js))},
	}
	path := "/v2/models/" + url.PathEscape(model) + "/infer"
	return func(ctx context.Context) error {
		_, err := t.do(ctx, http.MethodPost, path, body, headers)
		return err
	}, nil
}

// do sends one request and returns the body of a 200 answer; any other
// status is an error with the server's error text.
func (t *HTTP) do(ctx context.Context, method, path string, body []byte, headers http.Header) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, t.base+path, rd)
	if err != nil {
		return nil, err
	}
	if headers != nil {
		req.Header = headers.Clone() // the caller's is shared by concurrent requests
	} else if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := t.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(out, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("%s %s: %d: %s", method, path, resp.StatusCode, e.Error)
		}
		return nil, fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	return out, nil
}

// Live checks, within timeout, that the server answers that it is live.
func (t *HTTP) Live(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err := t.do(ctx, http.MethodGet, "/v2/health/live", nil, nil)
	return err
}
