// Package route is a built-in backend for dynamic selection inside an
// ensemble: a route model passes its payload input on through exactly one
// of its outputs, chosen per request by a rule over a selector input. In an
// ensemble, the steps that read the outputs not chosen do not run, and the
// steps on different outputs of one route step may write the same ensemble
// tensor (package ensemble checks that), so an ensemble can send, say,
// oranges to one model and apples to another. The configuration is plain
// Triton syntax:
//
//	name: "by_fruit"
//	backend: "route"
//	max_batch_size: 8
//	input [ { name: "CLASS" data_type: TYPE_INT32 dims: [ 1 ] },
//	        { name: "FEATURES" data_type: TYPE_FP32 dims: [ 4 ] } ]
//	output [ { name: "ORANGE" data_type: TYPE_FP32 dims: [ 4 ] },
//	         { name: "APPLE" data_type: TYPE_FP32 dims: [ 4 ] } ]
//	parameters { key: "selector" value: { string_value: "CLASS" } }
//	parameters { key: "table" value: { string_value: "0:ORANGE,1:APPLE" } }
//
// Parameters: selector names the selector input; the other input is the
// payload, and every output has the payload's type and dims. The rule is
// either table, "value:OUTPUT,..." (values compared as numbers, or as
// strings for a BYTES selector), with an optional default output for
// values the table lacks, or threshold, a number: the first output for a
// selector below it, the second otherwise. All items of one request must
// select the same output. The chosen output aliases the payload: no copy.
package route

import (
	"context"
	"encoding/binary"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// Name is the backend name config.pbtxt uses.
const Name = "route"

func init() { backends.Register(Name, Backend{}) }

// Backend loads route models.
type Backend struct{}

var (
	_ backends.Backend       = Backend{}
	_ backends.UnaryInstance = (*instance)(nil)
)

type model struct {
	name      string
	selector  string
	payload   string
	outputs   []string
	table     map[string]string // selector value (canonical text) -> output
	deflt     string            // output for values not in table; "" fails them
	threshold float64
	useThresh bool
	bytesSel  bool
}

// Load checks the configuration and parses the rule.
func (Backend) Load(_ context.Context, spec backends.ModelSpec) (backends.Model, error) {
	cfg := spec.Config
	m := &model{name: spec.Name}
	fail := func(format string, args ...any) error {
		return inference.InvalidArg("route model '%s': "+format, append([]any{spec.Name}, args...)...)
	}
	params := map[string]string{}
	for k, v := range cfg.GetParameters() {
		switch k {
		case "selector", "table", "default", "threshold":
			params[k] = strings.TrimSpace(v.GetStringValue())
		default:
			return nil, fail("unknown parameter '%s' (route takes selector, table, default and threshold)", k)
		}
	}
	m.selector = params["selector"]
	if m.selector == "" {
		return nil, fail("parameter selector must name the input whose value picks the output")
	}
	if len(cfg.GetInput()) != 2 {
		return nil, fail("needs two inputs, the selector '%s' and the payload; it has %d", m.selector, len(cfg.GetInput()))
	}
	var payload *inferencepb.ModelInput
	found := false
	for _, in := range cfg.GetInput() {
		switch {
		case in.GetName() == m.selector:
			found = true
			m.bytesSel = in.GetDataType() == inferencepb.DataType_TYPE_STRING
			if dt := inference.DataType(in.GetDataType()); !m.bytesSel && !numeric(dt) {
				return nil, fail("selector input '%s' is %s: it must be a number or BYTES", m.selector, dt)
			}
		default:
			payload = in
		}
	}
	if !found || payload == nil {
		return nil, fail("parameter selector: '%s' is not one of its two inputs", m.selector)
	}
	m.payload = payload.GetName()
	if len(cfg.GetOutput()) < 2 {
		return nil, fail("needs at least two outputs, one per branch")
	}
	for _, out := range cfg.GetOutput() {
		if out.GetDataType() != payload.GetDataType() || !slices.Equal(out.GetDims(), payload.GetDims()) {
			return nil, fail("output '%s' must have the payload '%s''s data_type %s and dims %v", out.GetName(), m.payload,
				inference.DataType(payload.GetDataType()), payload.GetDims())
		}
		m.outputs = append(m.outputs, out.GetName())
	}
	_, hasTable := params["table"]
	_, hasThresh := params["threshold"]
	switch {
	case hasTable == hasThresh:
		return nil, fail("set exactly one rule: parameter table (value:OUTPUT,...) or threshold")
	case hasThresh:
		t, err := strconv.ParseFloat(params["threshold"], 64)
		if err != nil || math.IsNaN(t) {
			return nil, fail("parameter threshold: %q is not a number", params["threshold"])
		}
		if m.bytesSel {
			return nil, fail("parameter threshold needs a numeric selector; '%s' is BYTES", m.selector)
		}
		if len(m.outputs) != 2 {
			return nil, fail("parameter threshold picks between two outputs; it has %d", len(m.outputs))
		}
		if _, ok := params["default"]; ok {
			return nil, fail("parameter default goes with table, not threshold")
		}
		m.threshold, m.useThresh = t, true
	default:
		m.table = map[string]string{}
		for entry := range strings.SplitSeq(params["table"], ",") {
			value, out, ok := strings.Cut(strings.TrimSpace(entry), ":")
			value, out = strings.TrimSpace(value), strings.TrimSpace(out)
			if !ok || value == "" || !slices.Contains(m.outputs, out) {
				return nil, fail("parameter table: entry %q is not value:OUTPUT with one of the outputs %v", entry, m.outputs)
			}
			key := value
			if !m.bytesSel {
				v, err := strconv.ParseFloat(value, 64)
				if err != nil {
					return nil, fail("parameter table: value %q is not a number", value)
				}
				key = canonical(v)
			}
			if _, dup := m.table[key]; dup {
				return nil, fail("parameter table: value %q appears twice", value)
			}
			m.table[key] = out
		}
		if d, ok := params["default"]; ok {
			if !slices.Contains(m.outputs, d) {
				return nil, fail("parameter default: '%s' is not one of the outputs %v", d, m.outputs)
			}
			m.deflt = d
		}
	}
	return m, nil
}

func numeric(dt inference.DataType) bool {
	switch dt {
	case inference.Int8, inference.Int16, inference.Int32, inference.Int64,
		inference.Uint8, inference.Uint16, inference.Uint32, inference.Uint64,
		inference.FP32, inference.FP64, inference.Bool:
		return true
	case inference.Invalid, inference.FP16, inference.BF16, inference.Bytes:
	}
	return false
}

func canonical(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

func (m *model) NewInstance(context.Context, backends.InstanceSpec) (backends.Instance, error) {
	return backends.Unary(&instance{m: m}), nil
}

type instance struct{ m *model }

// Execute answers each request with its payload under the output its
// selector picks.
func (i *instance) Execute(ctx context.Context, batch []*inference.Request) ([]*inference.Response, error) {
	resps, _, err := i.ExecuteWithPhases(ctx, batch)
	return resps, err
}

// ExecuteWithPhases is Execute; choosing is all inference.
func (i *instance) ExecuteWithPhases(_ context.Context, batch []*inference.Request) ([]*inference.Response, backends.Phases, error) {
	resps, err := i.route(batch)
	return resps, backends.Phases{}, err
}

func (i *instance) route(batch []*inference.Request) ([]*inference.Response, error) {
	out := make([]*inference.Response, len(batch))
	for r, req := range batch {
		sel, payload := req.Input(i.m.selector), req.Input(i.m.payload)
		if sel == nil || payload == nil {
			return nil, inference.InvalidArg("route model '%s' needs the inputs '%s' and '%s'", i.m.name, i.m.selector, i.m.payload)
		}
		name, err := i.m.pick(sel)
		if err != nil {
			return nil, err
		}
		out[r] = &inference.Response{Outputs: []inference.Tensor{{Name: name, DataType: payload.DataType, Shape: payload.Shape, Data: payload.Data}}}
	}
	return out, nil
}

// pick applies the rule to every item of the selector; they must agree.
func (m *model) pick(sel *inference.Tensor) (string, error) {
	values, err := m.values(sel)
	if err != nil {
		return "", err
	}
	if len(values) == 0 {
		return "", inference.InvalidArg("route model '%s': selector '%s' is empty", m.name, m.selector)
	}
	chosen := ""
	for _, v := range values {
		out, err := m.apply(v)
		if err != nil {
			return "", err
		}
		if chosen != "" && out != chosen {
			return "", inference.InvalidArg("route model '%s': the items of one request select different outputs ('%s' and '%s'); send them as separate requests", m.name, chosen, out)
		}
		chosen = out
	}
	return chosen, nil
}

type value struct {
	num  float64
	text string
}

func (m *model) apply(v value) (string, error) {
	if m.useThresh {
		if v.num < m.threshold {
			return m.outputs[0], nil
		}
		return m.outputs[1], nil
	}
	key := v.text
	if !m.bytesSel {
		key = canonical(v.num)
	}
	if out, ok := m.table[key]; ok {
		return out, nil
	}
	if m.deflt != "" {
		return m.deflt, nil
	}
	return "", inference.InvalidArg("route model '%s': selector value %s is not in its table and it has no default", m.name, key)
}

// values decodes the selector's elements.
func (m *model) values(t *inference.Tensor) ([]value, error) {
	if m.bytesSel {
		var out []value
		b := t.Data
		for len(b) > 0 {
			if len(b) < 4 {
				return nil, inference.InvalidArg("route model '%s': selector '%s' is not valid BYTES data", m.name, m.selector)
			}
			n := int(binary.LittleEndian.Uint32(b))
			if n > len(b)-4 {
				return nil, inference.InvalidArg("route model '%s': selector '%s' is not valid BYTES data", m.name, m.selector)
			}
			out = append(out, value{text: string(b[4 : 4+n])})
			b = b[4+n:]
		}
		return out, nil
	}
	size := t.DataType.Size()
	if size <= 0 || len(t.Data)%size != 0 {
		return nil, inference.InvalidArg("route model '%s': selector '%s' has %d bytes, not a whole number of %s", m.name, m.selector, len(t.Data), t.DataType)
	}
	out := make([]value, len(t.Data)/size)
	for i := range out {
		out[i].num = inference.Float64At(t.DataType, t.Data, i)
	}
	return out, nil
}
