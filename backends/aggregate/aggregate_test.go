package aggregate

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/encoding/prototext"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/backends/backendtest"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// backendtest.Collect waits on a goroutine of its own.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// spec is the configuration of a test model, written out in config.pbtxt
// syntax: inputs A, B, C, … of one type and dims, one output OUT.
type spec struct {
	method  string
	weights string // "" for none
	n       int    // inputs; 0 means 3, -1 none
	in      string // data_type, "FP32" for TYPE_FP32
	dims    string // "2, 3"
	out     string
	outDims string
	batch   int    // max_batch_size
	extra   string // more config.pbtxt text
}

func (s spec) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "name: \"m\"\nbackend: \"aggregate\"\nmax_batch_size: %d\n", s.batch)
	n := s.n
	if n == 0 {
		n = 3
	}
	for k := range max(n, 0) {
		fmt.Fprintf(&b, "input { name: \"%c\" data_type: TYPE_%s dims: [ %s ] }\n", 'A'+k, s.in, s.dims)
	}
	if s.out != "" {
		fmt.Fprintf(&b, "output { name: \"OUT\" data_type: TYPE_%s dims: [ %s ] }\n", s.out, s.outDims)
	}
	if s.method != "" {
		fmt.Fprintf(&b, "parameters { key: \"method\" value: { string_value: %q } }\n", s.method)
	}
	if s.weights != "" {
		fmt.Fprintf(&b, "parameters { key: \"weights\" value: { string_value: %q } }\n", s.weights)
	}
	b.WriteString(s.extra)
	return b.String()
}

func (s spec) config(t *testing.T) *inferencepb.ModelConfig {
	t.Helper()
	cfg := &inferencepb.ModelConfig{}
	if err := prototext.Unmarshal([]byte(s.text()), cfg); err != nil {
		t.Fatalf("config %q: %v", s.text(), err)
	}
	return cfg
}

func load(cfg *inferencepb.ModelConfig) (backends.Model, error) {
	return Backend{}.Load(context.Background(), backends.ModelSpec{Name: cfg.GetName(), Config: cfg})
}

// enc encodes test values (int, int64, uint64 or float64) as dt.
func enc(dt inference.DataType, vals ...any) []byte {
	var b []byte
	for _, v := range vals {
		var i int64
		var u uint64
		var f float64
		switch x := v.(type) {
		case int:
			i, u, f = int64(x), uint64(x), float64(x)
		case int64:
			i, u, f = x, uint64(x), float64(x)
		case uint64:
			i, u, f = int64(x), x, float64(x)
		case float64:
			i, u, f = int64(x), uint64(x), x
		default:
			panic(fmt.Sprintf("test value %T", v))
		}
		switch dt {
		case inference.FP32:
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(float32(f)))
		case inference.FP64:
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(f))
		case inference.Int8:
			b = append(b, byte(i))
		case inference.Uint8:
			b = append(b, byte(u))
		case inference.Int16, inference.Uint16:
			b = binary.LittleEndian.AppendUint16(b, uint16(u))
		case inference.Int32, inference.Uint32:
			b = binary.LittleEndian.AppendUint32(b, uint32(u))
		default:
			b = binary.LittleEndian.AppendUint64(b, u)
		}
	}
	return b
}

// dec writes tensor data as fmt.Sprint writes a slice of its elements.
func dec(dt inference.DataType, b []byte) string {
	var vals []any
	for len(b) > 0 {
		var v any
		switch dt {
		case inference.FP32:
			v = math.Float32frombits(binary.LittleEndian.Uint32(b))
		case inference.FP64:
			v = math.Float64frombits(binary.LittleEndian.Uint64(b))
		case inference.Int8:
			v = int8(b[0])
		case inference.Uint8:
			v = b[0]
		case inference.Int16:
			v = int16(binary.LittleEndian.Uint16(b))
		case inference.Uint16:
			v = binary.LittleEndian.Uint16(b)
		case inference.Int32:
			v = int32(binary.LittleEndian.Uint32(b))
		case inference.Uint32:
			v = binary.LittleEndian.Uint32(b)
		case inference.Int64:
			v = int64(binary.LittleEndian.Uint64(b))
		default:
			v = binary.LittleEndian.Uint64(b)
		}
		vals = append(vals, v)
		b = b[dt.Size():]
	}
	return fmt.Sprint(vals)
}

// request builds a request with inputs A, B, … of one shape.
func request(dt inference.DataType, shape []int64, in ...[]any) *inference.Request {
	req := &inference.Request{ModelName: "m"}
	for k, vals := range in {
		req.Inputs = append(req.Inputs, inference.Tensor{
			Name: string(rune('A' + k)), DataType: dt, Shape: shape, Data: enc(dt, vals...),
		})
	}
	return req
}

func zeros(n int) []any {
	z := make([]any, n)
	for i := range z {
		z[i] = 0
	}
	return z
}

func instanceOf(t *testing.T, cfg *inferencepb.ModelConfig) backends.Instance {
	t.Helper()
	return backendtest.Instance(t, Backend{}, cfg)
}

// run executes one batch and returns its responses, one per request.
func run(t *testing.T, inst backends.Instance, batch ...*inference.Request) ([]*inference.Response, error) {
	t.Helper()
	all, err := backendtest.Collect(context.Background(), inst, batch)
	if err != nil {
		return nil, err
	}
	out := make([]*inference.Response, len(all))
	for i, resps := range all {
		if len(resps) != 1 {
			t.Fatalf("request %d: %d responses, want 1", i, len(resps))
		}
		out[i] = resps[0]
	}
	return out, nil
}

func TestRegistered(t *testing.T) {
	if b, ok := backends.Lookup(Name); !ok || b == nil {
		t.Fatal("aggregate backend not registered")
	}
}

const (
	maxU64 = uint64(math.MaxUint64)
	maxI64 = math.MaxInt64
	minI64 = math.MinInt64
)

func TestMethods(t *testing.T) {
	nan := math.NaN()
	for _, c := range []struct {
		name      string
		spec      spec
		shape     []int64 // every input's, batch dimension included
		in        [][]any
		wantShape []int64
		want      string
	}{
		// mean
		{
			name: "mean FP32",
			spec: spec{method: "mean", in: "FP32", dims: "2", out: "FP32", outDims: "2"},
			in:   [][]any{{1, 2}, {3, 4}, {5, 9}}, shape: []int64{2},
			wantShape: []int64{2}, want: "[3 5]",
		},
		{
			name: "mean FP64 of one input",
			spec: spec{method: "mean", n: 1, in: "FP64", dims: "3", out: "FP64", outDims: "3"},
			in:   [][]any{{0.5, -1, 1e300}}, shape: []int64{3},
			wantShape: []int64{3}, want: "[0.5 -1 1e+300]",
		},
		{
			name: "mean INT32 rounds halves away from zero",
			spec: spec{method: "mean", n: 2, in: "INT32", dims: "4", out: "INT32", outDims: "4"},
			in:   [][]any{{1, -1, 1, 7}, {2, -2, 1, 8}}, shape: []int64{4},
			wantShape: []int64{4}, want: "[2 -2 1 8]",
		},
		{
			name: "mean FP32 to UINT8 rounds and saturates, NaN is 0",
			spec: spec{method: "mean", n: 2, in: "FP32", dims: "5", out: "UINT8", outDims: "5"},
			in:   [][]any{{300, -5, 2.4, nan, 254.6}, {300, -5, 2.4, 1, 254.6}}, shape: []int64{5},
			wantShape: []int64{5}, want: "[255 0 2 0 255]",
		},
		{
			name: "mean INT64 to INT8 saturates",
			spec: spec{method: "mean", n: 2, in: "INT64", dims: "2", out: "INT8", outDims: "2"},
			in:   [][]any{{1000, -1000}, {1000, -1000}}, shape: []int64{2},
			wantShape: []int64{2}, want: "[127 -128]",
		},
		{
			name: "mean FP64 to INT64 and UINT64 saturates",
			spec: spec{method: "mean", n: 2, in: "FP64", dims: "3", out: "INT64", outDims: "3"},
			in:   [][]any{{1e300, -1e300, math.Inf(1)}, {1e300, -1e300, 0}}, shape: []int64{3},
			wantShape: []int64{3}, want: fmt.Sprint([]any{int64(maxI64), int64(minI64), int64(maxI64)}),
		},
		{
			name: "mean FP64 to UINT64 saturates",
			spec: spec{method: "mean", n: 2, in: "FP64", dims: "2", out: "UINT64", outDims: "2"},
			in:   [][]any{{1e300, -1e300}, {1e300, -1e300}}, shape: []int64{2},
			wantShape: []int64{2}, want: fmt.Sprint([]any{maxU64, uint64(0)}),
		},
		{
			name: "mean UINT8 to FP32",
			spec: spec{method: "mean", n: 2, in: "UINT8", dims: "2", out: "FP32", outDims: "2"},
			in:   [][]any{{255, 0}, {0, 1}}, shape: []int64{2},
			wantShape: []int64{2}, want: "[127.5 0.5]",
		},
		{
			name: "mean of a batch of 2 items",
			spec: spec{method: "mean", n: 2, in: "INT16", dims: "-1", out: "INT16", outDims: "-1", batch: 8},
			in:   [][]any{{1, 2, 3, 4, 5, 6}, {3, 2, 1, 0, -5, -6}}, shape: []int64{2, 3},
			wantShape: []int64{2, 3}, want: "[2 2 2 2 0 0]",
		},
		// weighted_mean
		{
			name: "weighted_mean FP32",
			spec: spec{method: "weighted_mean", weights: "1, 3", n: 2, in: "FP32", dims: "2", out: "FP32", outDims: "2"},
			in:   [][]any{{0, 4}, {4, 0}}, shape: []int64{2},
			wantShape: []int64{2}, want: "[3 1]",
		},
		{
			name: "weighted_mean with zero weights picks an input",
			spec: spec{method: "weighted_mean", weights: "0,1,0", in: "INT32", dims: "2", out: "INT32", outDims: "2"},
			in:   [][]any{{100, 100}, {-7, 9}, {100, 100}}, shape: []int64{2},
			wantShape: []int64{2}, want: "[-7 9]",
		},
		{
			name: "weighted_mean of a batch of 2 items to INT64",
			spec: spec{method: "weighted_mean", weights: "0.25,0.75", n: 2, in: "FP64", dims: "1", out: "INT64", outDims: "1", batch: 2},
			in:   [][]any{{2, 10}, {0, 2.5}}, shape: []int64{2, 1},
			wantShape: []int64{2, 1}, want: "[1 4]", // 0.5 → 1, 4.375 → 4
		},
		// max and min
		{
			name: "max FP32, NaN propagates",
			spec: spec{method: "max", n: 2, in: "FP32", dims: "3", out: "FP32", outDims: "3"},
			in:   [][]any{{1, 5, nan}, {3, 2, 1}}, shape: []int64{3},
			wantShape: []int64{3}, want: "[3 5 NaN]",
		},
		{
			name: "min FP64, NaN propagates from any input",
			spec: spec{method: "min", in: "FP64", dims: "2", out: "FP64", outDims: "2"},
			in:   [][]any{{1, 4}, {-2, nan}, {3, -9}}, shape: []int64{2},
			wantShape: []int64{2}, want: "[-2 NaN]",
		},
		{
			name: "min INT64 is exact at the extremes",
			spec: spec{method: "min", n: 2, in: "INT64", dims: "2", out: "INT64", outDims: "2"},
			in:   [][]any{{maxI64, minI64 + 1}, {maxI64 - 1, minI64}}, shape: []int64{2},
			wantShape: []int64{2}, want: fmt.Sprint([]any{int64(maxI64 - 1), int64(minI64)}),
		},
		{
			name: "max UINT64 is exact at the extremes",
			spec: spec{method: "max", n: 2, in: "UINT64", dims: "2", out: "UINT64", outDims: "2"},
			in:   [][]any{{maxU64 - 1, 0}, {maxU64, 1}}, shape: []int64{2},
			wantShape: []int64{2}, want: fmt.Sprint([]any{maxU64, uint64(1)}),
		},
		{
			name: "max INT32 to INT8 saturates",
			spec: spec{method: "max", n: 2, in: "INT32", dims: "3", out: "INT8", outDims: "3"},
			in:   [][]any{{300, -300, 5}, {-1, -400, 4}}, shape: []int64{3},
			wantShape: []int64{3}, want: "[127 -128 5]",
		},
		{
			name: "max UINT64 to INT64 saturates, exactly",
			spec: spec{method: "max", n: 1, in: "UINT64", dims: "3", out: "INT64", outDims: "3"},
			in:   [][]any{{maxU64, 7, uint64(maxI64 - 1)}}, shape: []int64{3},
			wantShape: []int64{3}, want: fmt.Sprint([]any{int64(maxI64), int64(7), int64(maxI64 - 1)}),
		},
		{
			name: "max INT64 to UINT64 saturates, exactly",
			spec: spec{method: "max", n: 2, in: "INT64", dims: "2", out: "UINT64", outDims: "2"},
			in:   [][]any{{maxI64 - 1, -5}, {0, -9}}, shape: []int64{2},
			wantShape: []int64{2}, want: fmt.Sprint([]any{uint64(maxI64 - 1), uint64(0)}),
		},
		{
			name: "max INT8 to UINT16 saturates at 0",
			spec: spec{method: "max", n: 2, in: "INT8", dims: "2", out: "UINT16", outDims: "2"},
			in:   [][]any{{-5, 100}, {-3, 127}}, shape: []int64{2},
			wantShape: []int64{2}, want: "[0 127]",
		},
		{
			name: "min FP32 to INT32 rounds, NaN is 0",
			spec: spec{method: "min", n: 2, in: "FP32", dims: "3", out: "INT32", outDims: "3"},
			in:   [][]any{{2.5, -2.5, nan}, {3, 0, 1}}, shape: []int64{3},
			wantShape: []int64{3}, want: "[3 -3 0]",
		},
		{
			name: "max INT16 to FP32",
			spec: spec{method: "max", n: 2, in: "INT16", dims: "1", out: "FP32", outDims: "1"},
			in:   [][]any{{-7}, {-8}}, shape: []int64{1},
			wantShape: []int64{1}, want: "[-7]",
		},
		{
			name: "min of a batch of 2 items",
			spec: spec{method: "min", n: 2, in: "UINT32", dims: "2", out: "UINT32", outDims: "2", batch: 4},
			in:   [][]any{{1, 9, 4, 4}, {2, 8, 3, 5}}, shape: []int64{2, 2},
			wantShape: []int64{2, 2}, want: "[1 8 3 4]",
		},
		// vote on scores
		{
			name: "vote on scores, majority",
			spec: spec{method: "vote", in: "FP32", dims: "2", out: "INT32", outDims: "1"},
			in:   [][]any{{0.9, 0.1}, {0.2, 0.8}, {0.3, 0.7}}, shape: []int64{2},
			wantShape: []int64{1}, want: "[1]",
		},
		{
			name: "vote on scores, weights outvote the majority",
			spec: spec{method: "vote", weights: "3,1,1", in: "FP32", dims: "2", out: "INT32", outDims: "1"},
			in:   [][]any{{0.9, 0.1}, {0.2, 0.8}, {0.3, 0.7}}, shape: []int64{2},
			wantShape: []int64{1}, want: "[0]",
		},
		{
			name: "vote on scores, a zero weight does not count",
			spec: spec{method: "vote", weights: "0,1", n: 2, in: "FP32", dims: "2", out: "INT32", outDims: "1"},
			in:   [][]any{{0.9, 0.1}, {0.2, 0.8}}, shape: []int64{2},
			wantShape: []int64{1}, want: "[1]",
		},
		{
			name: "vote on scores, a tie between classes goes to the lowest",
			spec: spec{method: "vote", n: 2, in: "FP64", dims: "4", out: "UINT8", outDims: "1"},
			in:   [][]any{{0, 0, 0, 1}, {0, 0, 1, 0}}, shape: []int64{4},
			wantShape: []int64{1}, want: "[2]",
		},
		{
			name: "vote on scores, a weighted tie goes to the lowest",
			spec: spec{method: "vote", weights: "2,1,1", in: "FP32", dims: "3", out: "INT8", outDims: "1"},
			in:   [][]any{{0, 0, 1}, {1, 0, 0}, {1, 0, 0}}, shape: []int64{3},
			wantShape: []int64{1}, want: "[0]",
		},
		{
			name: "vote on scores, a tie inside one input goes to its lowest index",
			spec: spec{method: "vote", n: 1, in: "FP32", dims: "3", out: "INT32", outDims: "1"},
			in:   [][]any{{0.1, 0.5, 0.5}}, shape: []int64{3},
			wantShape: []int64{1}, want: "[1]",
		},
		{
			name: "vote on scores, NaN never wins",
			spec: spec{method: "vote", n: 2, in: "FP32", dims: "3", out: "INT32", outDims: "1"},
			in:   [][]any{{nan, 0.1, 0}, {nan, nan, nan}}, shape: []int64{3},
			wantShape: []int64{1}, want: "[0]", // votes 1 and 0 (all NaN): a tie
		},
		{
			name: "vote on integer scores",
			spec: spec{method: "vote", in: "INT64", dims: "3", out: "INT64", outDims: "1"},
			in:   [][]any{{minI64, maxI64, 0}, {-1, -2, -3}, {5, 6, 6}}, shape: []int64{3},
			wantShape: []int64{1}, want: "[1]",
		},
		{
			name: "vote on scores of a batch of 2 items",
			spec: spec{method: "vote", in: "FP32", dims: "2", out: "INT32", outDims: "1", batch: 8},
			in:   [][]any{{0.9, 0.1, 0.1, 0.9}, {0.2, 0.8, 0.6, 0.4}, {0.3, 0.7, 0.7, 0.3}}, shape: []int64{2, 2},
			wantShape: []int64{2, 1}, want: "[1 0]",
		},
		{
			name: "vote on scores of variable size",
			spec: spec{method: "vote", in: "FP32", dims: "2, -1", out: "UINT16", outDims: "2, 1"},
			in:   [][]any{{0, 1, 2, 2, 1, 0}, {0, 1, 2, 0, 0, 1}, {3, 1, 2, 0, 1, 0}}, shape: []int64{2, 3},
			wantShape: []int64{2, 1}, want: "[2 0]", // 0, 2, 1 tie in the second
		},
		// vote on class indices
		{
			name: "vote on INT32 class indices",
			spec: spec{method: "vote", in: "INT32", dims: "6", out: "INT32", outDims: "6"},
			in:   [][]any{{1, 2, 3, 0, 5, -1}, {1, 3, 2, 0, 3, -2}, {2, 3, 2, 5, 4, 7}}, shape: []int64{6},
			wantShape: []int64{6}, want: "[1 3 2 0 3 -2]",
		},
		{
			name: "vote on UINT8 class indices, weighted, to INT16",
			spec: spec{method: "vote", weights: "1,1,2.5", in: "UINT8", dims: "2", out: "INT16", outDims: "2"},
			in:   [][]any{{4, 255}, {4, 255}, {9, 0}}, shape: []int64{2},
			wantShape: []int64{2}, want: "[9 0]",
		},
		{
			name: "vote on INT64 class indices at the extremes",
			spec: spec{method: "vote", n: 2, in: "INT64", dims: "2", out: "INT64", outDims: "2"},
			in:   [][]any{{maxI64, maxI64}, {minI64, maxI64}}, shape: []int64{2},
			wantShape: []int64{2}, want: fmt.Sprint([]any{int64(minI64), int64(maxI64)}),
		},
		{
			name: "vote on UINT64 class indices at the extremes",
			spec: spec{method: "vote", in: "UINT64", dims: "1", out: "UINT64", outDims: "1"},
			in:   [][]any{{maxU64}, {0}, {maxU64}}, shape: []int64{1},
			wantShape: []int64{1}, want: fmt.Sprint([]any{maxU64}),
		},
		{
			name: "vote on UINT32 class indices to INT64",
			spec: spec{method: "vote", n: 2, in: "UINT32", dims: "1", out: "INT64", outDims: "1"},
			in:   [][]any{{math.MaxUint32}, {math.MaxUint32}}, shape: []int64{1},
			wantShape: []int64{1}, want: "[4294967295]",
		},
		{
			name: "vote on class indices of a batch of 2 items",
			spec: spec{method: "vote", in: "INT8", dims: "-1", out: "INT8", outDims: "-1", batch: 2},
			in:   [][]any{{1, 2, 3, 4}, {1, 3, 3, 3}, {2, 3, 4, 5}}, shape: []int64{2, 2},
			wantShape: []int64{2, 2}, want: "[1 3 3 3]",
		},
		{
			name: "vote on scalar class indices",
			spec: spec{method: "vote", in: "INT16", dims: "", out: "INT16", outDims: "", batch: 4},
			in:   [][]any{{3, 1}, {4, 1}, {4, 2}}, shape: []int64{2},
			wantShape: []int64{2}, want: "[4 1]",
		},
		// argmax
		{
			name: "argmax averages before it picks",
			spec: spec{method: "argmax", in: "FP32", dims: "3", out: "INT32", outDims: "1"},
			in:   [][]any{{0.6, 0.4, 0}, {0, 0.45, 0.55}, {0.2, 0.3, 0.5}}, shape: []int64{3},
			wantShape: []int64{1}, want: "[1]", // a hard vote says 2
		},
		{
			name: "argmax weighted",
			spec: spec{method: "argmax", weights: "5,1,1", in: "FP32", dims: "3", out: "INT64", outDims: "1"},
			in:   [][]any{{0.6, 0.4, 0}, {0, 0.45, 0.55}, {0.2, 0.3, 0.5}}, shape: []int64{3},
			wantShape: []int64{1}, want: "[0]",
		},
		{
			name: "argmax tie goes to the lowest index",
			spec: spec{method: "argmax", n: 2, in: "FP64", dims: "3", out: "UINT8", outDims: "1"},
			in:   [][]any{{0, 1, 1}, {1, 0, 0}}, shape: []int64{3},
			wantShape: []int64{1}, want: "[0]",
		},
		{
			name: "argmax NaN never wins",
			spec: spec{method: "argmax", n: 2, in: "FP32", dims: "2", out: "INT32", outDims: "1"},
			in:   [][]any{{nan, 1}, {5, 1}}, shape: []int64{2},
			wantShape: []int64{1}, want: "[1]",
		},
		{
			name: "argmax of integer scores",
			spec: spec{method: "argmax", n: 2, in: "UINT16", dims: "3", out: "INT8", outDims: "1"},
			in:   [][]any{{1, 65535, 0}, {2, 0, 65535}}, shape: []int64{3},
			wantShape: []int64{1}, want: "[1]",
		},
		{
			name: "argmax of a batch of 2 items",
			spec: spec{method: "argmax", n: 2, in: "FP32", dims: "2", out: "INT8", outDims: "1", batch: 8},
			in:   [][]any{{0.9, 0.1, 0.1, 0.9}, {0.2, 0.8, 0.4, 0.6}}, shape: []int64{2, 2},
			wantShape: []int64{2, 1}, want: "[0 1]",
		},
		{
			name: "argmax of variable size",
			spec: spec{method: "argmax", n: 1, in: "FP64", dims: "-1", out: "INT32", outDims: "1"},
			in:   [][]any{{1, 2, 3, 4, 3}}, shape: []int64{5},
			wantShape: []int64{1}, want: "[3]",
		},
		// concat
		{
			name: "concat FP32",
			spec: spec{method: "concat", in: "FP32", dims: "2", out: "FP32", outDims: "6"},
			in:   [][]any{{1, 2}, {3, 4}, {5, 6}}, shape: []int64{2},
			wantShape: []int64{6}, want: "[1 2 3 4 5 6]",
		},
		{
			name: "concat along the last dimension",
			spec: spec{method: "concat", n: 2, in: "INT16", dims: "2, 2", out: "INT16", outDims: "2, 4"},
			in:   [][]any{{1, 2, 3, 4}, {5, 6, 7, 8}}, shape: []int64{2, 2},
			wantShape: []int64{2, 4}, want: "[1 2 5 6 3 4 7 8]",
		},
		{
			name: "concat of a batch of 2 items",
			spec: spec{method: "concat", in: "UINT64", dims: "1", out: "UINT64", outDims: "3", batch: 2},
			in:   [][]any{{1, 2}, {3, 4}, {5, maxU64}}, shape: []int64{2, 1},
			wantShape: []int64{2, 3}, want: fmt.Sprint([]any{uint64(1), uint64(3), uint64(5), uint64(2), uint64(4), maxU64}),
		},
		{
			name: "concat of variable size",
			spec: spec{method: "concat", n: 2, in: "INT8", dims: "-1", out: "INT8", outDims: "-1"},
			in:   [][]any{{-1, -2, -3}, {4, 5, 6}}, shape: []int64{3},
			wantShape: []int64{6}, want: "[-1 -2 -3 4 5 6]",
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := c.spec.config(t)
			inst := instanceOf(t, cfg)
			dt := inference.DataType(cfg.GetInput()[0].GetDataType())
			resps, err := run(t, inst, request(dt, c.shape, c.in...))
			if err != nil {
				t.Fatal(err)
			}
			out := resps[0].Output("OUT")
			if out == nil || len(resps[0].Outputs) != 1 {
				t.Fatalf("outputs %+v, want OUT alone", resps[0].Outputs)
			}
			wantType := inference.DataType(cfg.GetOutput()[0].GetDataType())
			if out.DataType != wantType || !slices.Equal(out.Shape, c.wantShape) {
				t.Errorf("OUT is %s %v, want %s %v", out.DataType, out.Shape, wantType, c.wantShape)
			}
			if got := dec(out.DataType, out.Data); got != c.want {
				t.Errorf("OUT = %s, want %s", got, c.want)
			}
		})
	}
}

// TestExampleConfig runs the configuration of the package documentation.
func TestExampleConfig(t *testing.T) {
	inst := instanceOf(t, backendtest.Config(t, "testdata/vote3/config.pbtxt"))
	// Weights 1,1,2: C alone ties A and B together, and a tie goes to
	// the lower class.
	resps, err := run(t, inst,
		request(inference.FP32, []int64{1, 2}, []any{0.9, 0.1}, []any{0.2, 0.8}, []any{0.3, 0.7}),
		request(inference.FP32, []int64{2, 2}, []any{0.9, 0.1, 0.1, 0.9}, []any{0.8, 0.2, 0.3, 0.7}, []any{0.3, 0.7, 0.6, 0.4}),
	)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"[1]", "[0 0]"} {
		out := resps[i].Output("CLASS")
		if got := dec(out.DataType, out.Data); out.DataType != inference.Int32 || got != want {
			t.Errorf("request %d: CLASS = %s %s, want INT32 %s", i, out.DataType, got, want)
		}
	}
}

// TestBatchOfRequests checks that each request of a batch gets its own
// answer, whatever its batch size.
func TestBatchOfRequests(t *testing.T) {
	cfg := spec{method: "weighted_mean", weights: "1,2", n: 2, in: "FP32", dims: "2", out: "FP32", outDims: "2", batch: 8}.config(t)
	inst := instanceOf(t, cfg)
	batch := []*inference.Request{
		request(inference.FP32, []int64{1, 2}, []any{0, 3}, []any{3, 0}),
		request(inference.FP32, []int64{2, 2}, []any{3, 3, 6, 6}, []any{0, 0, 3, 0}),
		request(inference.FP32, []int64{1, 2}, []any{-3, -6}, []any{0, 0}),
	}
	resps, err := run(t, inst, batch...)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []struct {
		shape []int64
		vals  string
	}{{[]int64{1, 2}, "[2 1]"}, {[]int64{2, 2}, "[1 1 4 2]"}, {[]int64{1, 2}, "[-1 -2]"}} {
		out := resps[i].Output("OUT")
		if got := dec(out.DataType, out.Data); !slices.Equal(out.Shape, want.shape) || got != want.vals {
			t.Errorf("request %d: OUT %v = %s, want %v = %s", i, out.Shape, got, want.shape, want.vals)
		}
	}
	// The inputs are the caller's: they are left as they were.
	if got := dec(inference.FP32, batch[1].Inputs[0].Data); got != "[3 3 6 6]" {
		t.Errorf("input A of request 1 is now %s", got)
	}
}

func TestRequestErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		spec spec
		req  *inference.Request
		want string
	}{
		{
			name: "shapes differ",
			spec: spec{method: "mean", in: "FP32", dims: "-1", out: "FP32", outDims: "-1", batch: 4},
			req: &inference.Request{Inputs: []inference.Tensor{
				{Name: "A", DataType: inference.FP32, Shape: []int64{1, 2}, Data: enc(inference.FP32, 1, 2)},
				{Name: "B", DataType: inference.FP32, Shape: []int64{1, 3}, Data: enc(inference.FP32, 1, 2, 3)},
				{Name: "C", DataType: inference.FP32, Shape: []int64{1, 2}, Data: enc(inference.FP32, 1, 2)},
			}},
			want: "aggregate model 'm': inputs must all have the same shape, got 'A' [1,2], 'B' [1,3], 'C' [1,2]",
		},
		{
			name: "missing input",
			spec: spec{method: "concat", n: 2, in: "INT32", dims: "1", out: "INT32", outDims: "2"},
			req:  request(inference.Int32, []int64{1}, []any{1}),
			want: "aggregate model 'm': request has no input 'B'",
		},
		{
			name: "wrong data type",
			spec: spec{method: "max", n: 1, in: "INT32", dims: "1", out: "INT32", outDims: "1"},
			req:  request(inference.FP32, []int64{1}, []any{1}),
			want: "aggregate model 'm': input 'A' is FP32, want INT32",
		},
		{
			name: "wrong rank",
			spec: spec{method: "argmax", n: 1, in: "FP32", dims: "2", out: "INT32", outDims: "1", batch: 2},
			req:  request(inference.FP32, []int64{2}, []any{1, 2}),
			want: "aggregate model 'm': input 'A' has shape [2], want 2 dimensions",
		},
		{
			name: "wrong byte size",
			spec: spec{method: "min", n: 1, in: "INT16", dims: "2", out: "INT16", outDims: "2"},
			req:  request(inference.Int16, []int64{2}, []any{1, 2, 3}),
			want: "aggregate model 'm': input 'A' has 6 bytes, want 4 for shape [2]",
		},
		{
			name: "no classes",
			spec: spec{method: "argmax", n: 2, in: "FP32", dims: "-1", out: "INT32", outDims: "1"},
			req:  request(inference.FP32, []int64{0}, []any{}, []any{}),
			want: `aggregate model 'm': method "argmax" picks a class along the last dimension, but the inputs' shape [0] has none`,
		},
		{
			name: "more classes than the output holds",
			spec: spec{method: "vote", n: 1, in: "FP32", dims: "-1", out: "INT8", outDims: "1"},
			req:  request(inference.FP32, []int64{129}, zeros(129)),
			want: "aggregate model 'm': output 'OUT' data_type INT8 cannot hold class index 128 of inputs shaped [129]",
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			inst := instanceOf(t, c.spec.config(t))
			_, err := run(t, inst, c.req)
			if inference.CodeOf(err) != inference.CodeInvalidArg || err.Error() != c.want {
				t.Errorf("error %v (%s),\nwant %s (Invalid argument)", err, inference.CodeOf(err), c.want)
			}
		})
	}
}

// TestRequestErrorFailsItsBatch checks that a request the model cannot
// compute fails every request of its batch (its batch mates share its
// shapes) and that none gets a response.
func TestRequestErrorFailsItsBatch(t *testing.T) {
	inst := instanceOf(t, spec{method: "concat", n: 2, in: "FP32", dims: "-1", out: "FP32", outDims: "-1", batch: 4}.config(t))
	good := request(inference.FP32, []int64{1, 1}, []any{1}, []any{2})
	bad := &inference.Request{Inputs: []inference.Tensor{
		{Name: "A", DataType: inference.FP32, Shape: []int64{1, 1}, Data: enc(inference.FP32, 1)},
		{Name: "B", DataType: inference.FP32, Shape: []int64{1, 2}, Data: enc(inference.FP32, 1, 2)},
	}}
	all, err := backendtest.Collect(context.Background(), inst, []*inference.Request{good, bad})
	if inference.CodeOf(err) != inference.CodeInvalidArg {
		t.Fatalf("error %v, want invalid argument", err)
	}
	for i, resps := range all {
		if len(resps) != 0 {
			t.Errorf("request %d got %d responses", i, len(resps))
		}
	}
}

func TestCancelled(t *testing.T) {
	inst := instanceOf(t, spec{method: "mean", n: 1, in: "FP32", dims: "1", out: "FP32", outDims: "1"}.config(t))
	u, ok := backends.UnwrapUnary(inst)
	if !ok {
		t.Fatal("the instance is not a backends.Unary")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err := u.ExecuteWithPhases(ctx, []*inference.Request{request(inference.FP32, []int64{1}, []any{1})})
	if inference.CodeOf(err) != inference.CodeCancelled {
		t.Errorf("error %v, want cancelled", err)
	}
}

func TestLoadErrors(t *testing.T) {
	scores := spec{method: "vote", in: "FP32", dims: "2", out: "INT32", outDims: "1"}
	with := func(s spec, f func(*spec)) spec { f(&s); return s }
	const (
		invalid     = inference.CodeInvalidArg
		unsupported = inference.CodeUnsupported
	)
	for _, c := range []struct {
		name   string
		spec   spec
		mutate func(*inferencepb.ModelConfig)
		code   inference.Code
		want   string
	}{
		// parameters
		{
			name: "unknown parameter",
			spec: with(scores, func(s *spec) { s.extra = `parameters { key: "wieghts" value: { string_value: "1,1,1" } }` }),
			code: invalid, want: `aggregate model 'm': unknown parameter "wieghts": the aggregate backend takes method and weights`,
		},
		{
			name: "no method",
			spec: with(scores, func(s *spec) { s.method = "" }),
			code: invalid, want: "aggregate model 'm': parameter method is required: one of mean, weighted_mean, max, min, vote, argmax, concat",
		},
		{
			name: "unknown method",
			spec: with(scores, func(s *spec) { s.method = "median" }),
			code: invalid, want: `aggregate model 'm': parameter method: "median" is not one of mean, weighted_mean, max, min, vote, argmax, concat`,
		},
		// inputs
		{
			name: "no input",
			spec: with(scores, func(s *spec) { s.n = -1 }),
			code: invalid, want: "aggregate model 'm': needs at least one input to aggregate",
		},
		{
			name: "FP16 input",
			spec: with(scores, func(s *spec) { s.in = "FP16" }),
			code: unsupported, want: "aggregate model 'm': input 'A' data_type TYPE_FP16 is not supported: the aggregate backend takes " + supportedList,
		},
		{
			name: "BF16 input",
			spec: with(scores, func(s *spec) { s.in = "BF16" }),
			code: unsupported, want: "aggregate model 'm': input 'A' data_type TYPE_BF16 is not supported: the aggregate backend takes " + supportedList,
		},
		{
			name: "BOOL input",
			spec: with(scores, func(s *spec) { s.in = "BOOL" }),
			code: unsupported, want: "aggregate model 'm': input 'A' data_type TYPE_BOOL is not supported: the aggregate backend takes " + supportedList,
		},
		{
			name: "BYTES input",
			spec: with(scores, func(s *spec) { s.in = "STRING" }),
			code: unsupported, want: "aggregate model 'm': input 'A' data_type TYPE_STRING is not supported: the aggregate backend takes " + supportedList,
		},
		{
			name: "inputs of different types",
			spec: with(scores, func(s *spec) {
				s.extra = `input { name: "D" data_type: TYPE_FP64 dims: [ 2 ] }`
			}),
			code: invalid, want: "aggregate model 'm': input 'D' is TYPE_FP64 [2], but input 'A' is TYPE_FP32 [2]: all inputs must have the same data_type and dims",
		},
		{
			name: "inputs of different dims",
			spec: with(scores, func(s *spec) {
				s.extra = `input { name: "D" data_type: TYPE_FP32 dims: [ -1 ] }`
			}),
			code: invalid, want: "aggregate model 'm': input 'D' is TYPE_FP32 [-1], but input 'A' is TYPE_FP32 [2]: all inputs must have the same data_type and dims",
		},
		{
			name: "optional input",
			spec: with(scores, func(s *spec) {
				s.extra = `input { name: "D" data_type: TYPE_FP32 dims: [ 2 ] optional: true }`
			}),
			code: unsupported, want: "aggregate model 'm': input 'D' is optional, but every input must be present to be aggregated",
		},
		{
			name: "ragged input",
			spec: with(scores, func(s *spec) {
				s.extra = `input { name: "D" data_type: TYPE_FP32 dims: [ 2 ] allow_ragged_batch: true }`
			}),
			code: unsupported, want: "aggregate model 'm': input 'D' allows ragged batches, but the inputs of a request must all have the same shape",
		},
		{
			name: "reshaped input",
			spec: with(scores, func(s *spec) {
				s.extra = `input { name: "D" data_type: TYPE_FP32 dims: [ 2 ] reshape: { shape: [ 1, 2 ] } }`
			}),
			code: unsupported, want: "aggregate model 'm': input 'D' has a reshape, which the aggregate backend does not support",
		},
		// outputs
		{
			name: "no output",
			spec: with(scores, func(s *spec) { s.out = "" }),
			code: invalid, want: "aggregate model 'm': needs exactly one output, got 0",
		},
		{
			name: "two outputs",
			spec: with(scores, func(s *spec) {
				s.extra = `output { name: "OUT2" data_type: TYPE_INT32 dims: [ 1 ] }`
			}),
			code: invalid, want: "aggregate model 'm': needs exactly one output, got 2",
		},
		{
			name: "FP16 output",
			spec: spec{method: "mean", in: "FP32", dims: "2", out: "FP16", outDims: "2"},
			code: unsupported, want: "aggregate model 'm': output 'OUT' data_type TYPE_FP16 is not supported: the aggregate backend takes " + supportedList,
		},
		{
			name: "reshaped output",
			spec: scores,
			mutate: func(cfg *inferencepb.ModelConfig) {
				cfg.Output[0].Reshape = &inferencepb.ModelTensorReshape{Shape: []int64{}}
			},
			code: unsupported, want: "aggregate model 'm': output 'OUT' has a reshape, which the aggregate backend does not support",
		},
		// weights
		{
			name: "weights for mean",
			spec: spec{method: "mean", weights: "1,1,1", in: "FP32", dims: "2", out: "FP32", outDims: "2"},
			code: invalid, want: `aggregate model 'm': parameter weights: method "mean" takes no weights`,
		},
		{
			name: "weights for max",
			spec: spec{method: "max", weights: "1,1,1", in: "FP32", dims: "2", out: "FP32", outDims: "2"},
			code: invalid, want: `aggregate model 'm': parameter weights: method "max" takes no weights`,
		},
		{
			name: "weights for min",
			spec: spec{method: "min", weights: "1,1,1", in: "FP32", dims: "2", out: "FP32", outDims: "2"},
			code: invalid, want: `aggregate model 'm': parameter weights: method "min" takes no weights`,
		},
		{
			name: "weights for concat",
			spec: spec{method: "concat", weights: "1,1,1", in: "FP32", dims: "2", out: "FP32", outDims: "6"},
			code: invalid, want: `aggregate model 'm': parameter weights: method "concat" takes no weights`,
		},
		{
			name: "weighted_mean without weights",
			spec: spec{method: "weighted_mean", in: "FP32", dims: "2", out: "FP32", outDims: "2"},
			code: invalid, want: `aggregate model 'm': parameter weights is required by method "weighted_mean": one non-negative number per input, in config order`,
		},
		{
			name: "too few weights",
			spec: with(scores, func(s *spec) { s.weights = "1,2" }),
			code: invalid, want: `aggregate model 'm': parameter weights: "1,2" has 2 values, want 3 (one per input, in config order)`,
		},
		{
			name: "too many weights",
			spec: with(scores, func(s *spec) { s.weights = "1,2,3,4" }),
			code: invalid, want: `aggregate model 'm': parameter weights: "1,2,3,4" has 4 values, want 3 (one per input, in config order)`,
		},
		{
			name: "empty weights",
			spec: with(scores, func(s *spec) {
				s.extra = `parameters { key: "weights" value: { string_value: "" } }`
			}),
			code: invalid, want: `aggregate model 'm': parameter weights is empty: want 3 non-negative numbers (one per input, in config order)`,
		},
		{
			name: "weight not a number",
			spec: with(scores, func(s *spec) { s.weights = "1, x ,1" }),
			code: invalid, want: `aggregate model 'm': parameter weights: "x" is not a finite number`,
		},
		{
			name: "weight left out",
			spec: with(scores, func(s *spec) { s.weights = "1,,1" }),
			code: invalid, want: `aggregate model 'm': parameter weights: "" is not a finite number`,
		},
		{
			name: "weight infinite",
			spec: with(scores, func(s *spec) { s.weights = "1,inf,1" }),
			code: invalid, want: `aggregate model 'm': parameter weights: "inf" is not a finite number`,
		},
		{
			name: "weight NaN",
			spec: with(scores, func(s *spec) { s.weights = "NaN,1,1" }),
			code: invalid, want: `aggregate model 'm': parameter weights: "NaN" is not a finite number`,
		},
		{
			name: "weight negative",
			spec: with(scores, func(s *spec) { s.weights = "1,-0.5,1" }),
			code: invalid, want: `aggregate model 'm': parameter weights: "-0.5" is negative`,
		},
		{
			name: "weights all zero",
			spec: with(scores, func(s *spec) { s.weights = "0, 0, -0" }),
			code: invalid, want: `aggregate model 'm': parameter weights: "0, 0, -0" are all zero`,
		},
		{
			name: "weights overflow",
			spec: with(scores, func(s *spec) { s.weights = "1e308,1e308,1" }),
			code: invalid, want: `aggregate model 'm': parameter weights: "1e308,1e308,1" add up to more than a float64 holds`,
		},
		// element-wise methods
		{
			name: "mean output dims",
			spec: spec{method: "mean", in: "FP32", dims: "2", out: "FP32", outDims: "1"},
			code: invalid, want: `aggregate model 'm': output 'OUT' dims [1] must be the inputs' dims [2] for method "mean"`,
		},
		{
			name: "max output dims",
			spec: spec{method: "max", in: "INT8", dims: "-1", out: "INT8", outDims: "4"},
			code: invalid, want: `aggregate model 'm': output 'OUT' dims [4] must be the inputs' dims [-1] for method "max"`,
		},
		// concat
		{
			name: "concat of scalars",
			spec: spec{method: "concat", in: "FP32", dims: "", out: "FP32", outDims: "3", batch: 2},
			code: invalid, want: `aggregate model 'm': method "concat" works along the last dimension, but input 'A' has dims []`,
		},
		{
			name: "concat output type",
			spec: spec{method: "concat", in: "FP32", dims: "2", out: "FP64", outDims: "6"},
			code: invalid, want: `aggregate model 'm': output 'OUT' data_type TYPE_FP64 must be the inputs' data_type TYPE_FP32 for method "concat"`,
		},
		{
			name: "concat output dims",
			spec: spec{method: "concat", in: "FP32", dims: "4, 2", out: "FP32", outDims: "4, 2"},
			code: invalid, want: `aggregate model 'm': output 'OUT' dims [4,2] must be [4,6] for method "concat" (the inputs' dims with the last one 3 times as large)`,
		},
		{
			name: "concat of variable size output dims",
			spec: spec{method: "concat", in: "FP32", dims: "-1", out: "FP32", outDims: "3"},
			code: invalid, want: `aggregate model 'm': output 'OUT' dims [3] must be [-1] for method "concat" (the inputs' dims with the last one 3 times as large)`,
		},
		// argmax
		{
			name: "argmax of scalars",
			spec: spec{method: "argmax", in: "FP32", dims: "", out: "INT32", outDims: "1", batch: 2},
			code: invalid, want: `aggregate model 'm': method "argmax" works along the last dimension, but input 'A' has dims []`,
		},
		{
			name: "argmax float output",
			spec: spec{method: "argmax", in: "FP32", dims: "3", out: "FP32", outDims: "1"},
			code: invalid, want: `aggregate model 'm': output 'OUT' data_type TYPE_FP32 must be an integer type for method "argmax"`,
		},
		{
			name: "argmax output dims",
			spec: spec{method: "argmax", in: "FP32", dims: "2, 3", out: "INT32", outDims: "2"},
			code: invalid, want: `aggregate model 'm': output 'OUT' dims [2] must be [2,1] for method "argmax" (the inputs' dims with the last one 1)`,
		},
		{
			name: "argmax output too narrow",
			spec: spec{method: "argmax", in: "FP32", dims: "300", out: "UINT8", outDims: "1"},
			code: invalid, want: `aggregate model 'm': output 'OUT' data_type TYPE_UINT8 cannot hold class index 299 for method "argmax"`,
		},
		// vote
		{
			name: "vote float output",
			spec: with(scores, func(s *spec) { s.out = "FP64" }),
			code: invalid, want: `aggregate model 'm': output 'OUT' data_type TYPE_FP64 must be an integer type for method "vote"`,
		},
		{
			name: "vote output dims fit neither form",
			spec: spec{method: "vote", in: "INT32", dims: "4, 3", out: "INT32", outDims: "4"},
			code: invalid, want: `aggregate model 'm': output 'OUT' dims [4] fit neither form of method "vote": [4,1] to vote with rows of scores, or [4,3] to vote with class indices`,
		},
		{
			name: "vote on one score",
			spec: spec{method: "vote", in: "FP32", dims: "1", out: "INT32", outDims: "2"},
			code: invalid, want: `aggregate model 'm': output 'OUT' dims [2] must be [1] for method "vote" on class indices (a vote on scores needs a last input dimension larger than 1)`,
		},
		{
			name: "vote on float class indices",
			spec: spec{method: "vote", in: "FP32", dims: "3", out: "INT32", outDims: "3"},
			code: invalid, want: `aggregate model 'm': method "vote" on class indices (output dims equal to the input dims) needs integer inputs, but input 'A' is TYPE_FP32`,
		},
		{
			name: "vote on class indices to a narrower type",
			spec: spec{method: "vote", in: "INT32", dims: "3", out: "INT16", outDims: "3"},
			code: invalid, want: `aggregate model 'm': output 'OUT' data_type TYPE_INT16 cannot hold every class index of the inputs' data_type TYPE_INT32 for method "vote"`,
		},
		{
			name: "vote on unsigned class indices to a signed type of their size",
			spec: spec{method: "vote", in: "UINT8", dims: "3", out: "INT8", outDims: "3"},
			code: invalid, want: `aggregate model 'm': output 'OUT' data_type TYPE_INT8 cannot hold every class index of the inputs' data_type TYPE_UINT8 for method "vote"`,
		},
		{
			name: "vote on signed class indices to an unsigned type",
			spec: spec{method: "vote", in: "INT8", dims: "3", out: "UINT64", outDims: "3"},
			code: invalid, want: `aggregate model 'm': output 'OUT' data_type TYPE_UINT64 cannot hold every class index of the inputs' data_type TYPE_INT8 for method "vote"`,
		},
		{
			name: "vote on scores to a too narrow type",
			spec: spec{method: "vote", in: "FP32", dims: "129", out: "INT8", outDims: "1"},
			code: invalid, want: `aggregate model 'm': output 'OUT' data_type TYPE_INT8 cannot hold class index 128 for method "vote"`,
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := c.spec.config(t)
			if c.mutate != nil {
				c.mutate(cfg)
			}
			_, err := load(cfg)
			if inference.CodeOf(err) != c.code || err.Error() != c.want {
				t.Errorf("Load error\n %v (%s),\nwant\n %s (%s)", err, inference.CodeOf(err), c.want, c.code)
			}
		})
	}
}

const supportedList = "TYPE_FP32, TYPE_FP64, TYPE_INT8, TYPE_INT16, TYPE_INT32, TYPE_INT64, TYPE_UINT8, TYPE_UINT16, TYPE_UINT32, TYPE_UINT64"

// TestLoadAccepts checks configurations at the edges of what Load allows.
func TestLoadAccepts(t *testing.T) {
	for name, s := range map[string]spec{
		"vote on scores of variable size":       {method: "vote", in: "FP32", dims: "-1", out: "INT32", outDims: "1"},
		"vote on 128 scores to INT8":            {method: "vote", in: "FP32", dims: "128", out: "INT8", outDims: "1"},
		"vote on UINT8 indices to INT16":        {method: "vote", in: "UINT8", dims: "1", out: "INT16", outDims: "1"},
		"vote on one index per input":           {method: "vote", in: "INT64", dims: "1", out: "INT64", outDims: "1"},
		"argmax of variable size to INT8":       {method: "argmax", in: "FP64", dims: "2, -1", out: "INT8", outDims: "2, 1"},
		"weights with spaces and exponents":     {method: "argmax", weights: " 1e-3 , 0 ,2", in: "FP32", dims: "2", out: "INT8", outDims: "1"},
		"one input":                             {method: "mean", n: 1, in: "UINT64", dims: "1", out: "INT8", outDims: "1"},
		"mean of a batching model with scalars": {method: "mean", in: "FP32", dims: "", out: "FP32", outDims: "", batch: 8},
	} {
		if _, err := load(s.config(t)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
