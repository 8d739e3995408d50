package server

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/encoding/prototext"

	"github.com/nereid-project/nereid/cache"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/ratelimit"
	"github.com/nereid-project/nereid/repository"
)

// loadTestModel loads one version of an identity model from config text,
// with modelDir as its directory, into a server of its own.
func loadTestModel(t *testing.T, opts LoaderOptions, name, text, modelDir string) (*Server, error) {
	t.Helper()
	cfg := &inferencepb.ModelConfig{}
	if err := prototext.Unmarshal([]byte(text), cfg); err != nil {
		t.Fatal(err)
	}
	l := NewLoader(opts)
	if err := l.Complete(context.Background(), modelDir, cfg, true); err != nil {
		t.Fatal(err)
	}
	s, err := l.LoadVersion(context.Background(), repository.VersionSpec{Name: name, Version: 1, Config: cfg, ModelDir: modelDir})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	models := &fakeModels{versions: map[string]map[int64]*loadedModel{name: {1: s.(*loadedModel)}}, allReady: true}
	return New(models, Options{}), nil
}

// sequenceConfig is an identity model whose outputs show what the
// sequence batcher added: OUTPUT1 echoes the START control, OUTPUT2 the
// CORRID control, and OUTPUT3 the implicit state, whose next value is the
// request's INPUT0 (the state output is OUTPUT0).
const sequenceConfig = `
name: "seq"
backend: "identity"
max_batch_size: 2
input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [
  { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "OUTPUT2" data_type: TYPE_UINT64 dims: [ 1 ] },
  { name: "OUTPUT3" data_type: TYPE_INT32 dims: [ 1 ] }
]
instance_group [ { count: 1 kind: KIND_CPU } ]
sequence_batching {
  max_sequence_idle_microseconds: 5000000
  control_input [
    { name: "INPUT1" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
    { name: "INPUT2" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }
  ]
  state [ {
    input_name: "INPUT3" output_name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 1 ]
    initial_state { name: "seed" data_type: TYPE_INT32 dims: [ 1 ] data_file: "seed.bin" }
  } ]
}
`

func seqDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "initial_state"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "initial_state", "seed.bin"), int32s(-7), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func seqInfer(s *Server, id any, start, end bool, in int32) (*inference.Response, error) {
	p := inference.Parameters{"sequence_id": id}
	if start {
		p["sequence_start"] = true
	}
	if end {
		p["sequence_end"] = true
	}
	return s.Infer(context.Background(), &inference.Request{
		ModelName: "seq", Parameters: p,
		Inputs: []inference.Tensor{{Name: "INPUT0", DataType: inference.Int32, Shape: []int64{1, 1}, Data: int32s(in)}},
	})
}

func outInt(t *testing.T, resp *inference.Response, name string) int64 {
	t.Helper()
	o := resp.Output(name)
	if o == nil {
		t.Fatalf("no output %s in %+v", name, resp.Outputs)
	}
	switch o.DataType {
	case inference.Int32:
		return int64(int32(uint32(o.Data[0]) | uint32(o.Data[1])<<8 | uint32(o.Data[2])<<16 | uint32(o.Data[3])<<24))
	default:
		var v uint64
		for i := range 8 {
			v |= uint64(o.Data[i]) << (8 * i)
		}
		return int64(v)
	}
}

func TestSequenceModelThroughServer(t *testing.T) {
	s, err := loadTestModel(t, LoaderOptions{}, "seq", sequenceConfig, seqDir(t))
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		id                   uint64
		start, end           bool
		in                   int32
		wantStart, wantState int64
	}{
		{11, true, false, 1, 1, -7}, // the initial state from initial_state/seed.bin
		{22, true, false, 100, 1, -7},
		{11, false, false, 2, 0, 1}, // the state is the previous INPUT0 of the same sequence
		{22, false, false, 200, 0, 100},
		{11, true, false, 3, 1, -7}, // a new START resets the state
		{11, false, true, 4, 0, 3},
		{22, false, true, 300, 0, 200},
	}
	for i, st := range steps {
		resp, err := seqInfer(s, st.id, st.start, st.end, st.in)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got := outInt(t, resp, "OUTPUT1"); got != st.wantStart {
			t.Errorf("step %d: START control %d, want %d", i, got, st.wantStart)
		}
		if got := outInt(t, resp, "OUTPUT2"); got != int64(st.id) {
			t.Errorf("step %d: CORRID control %d, want %d", i, got, st.id)
		}
		if got := outInt(t, resp, "OUTPUT3"); got != st.wantState {
			t.Errorf("step %d: state %d, want %d", i, got, st.wantState)
		}
	}
	stats, err := s.ModelStatistics(context.Background(), "seq", "")
	if err != nil {
		t.Fatal(err)
	}
	if ms := stats.ModelStats[0]; ms.InferenceCount != uint64(len(steps)) {
		t.Errorf("inference_count %d, want %d", ms.InferenceCount, len(steps))
	}
}

func TestSequenceRequestChecks(t *testing.T) {
	s, err := loadTestModel(t, LoaderOptions{}, "seq", sequenceConfig, seqDir(t))
	if err != nil {
		t.Fatal(err)
	}
	plain := newTestServer(t)
	in := []inference.Tensor{{Name: "INPUT0", DataType: inference.Int32, Shape: []int64{1, 1}, Data: int32s(1)}}
	cases := []struct {
		name   string
		srv    *Server
		req    *inference.Request
		code   inference.Code
		substr string
	}{
		{"start without id", s, &inference.Request{ModelName: "seq", Inputs: in, Parameters: inference.Parameters{"sequence_start": true}},
			inference.CodeInvalidArg, "inference request to model 'seq' sets 'sequence_start' without a sequence ID"},
		{"end with id 0", s, &inference.Request{ModelName: "seq", Inputs: in, Parameters: inference.Parameters{"sequence_id": uint64(0), "sequence_end": true}},
			inference.CodeInvalidArg, "sets 'sequence_end' without a sequence ID"},
		{"no id at all", s, &inference.Request{ModelName: "seq", Inputs: in},
			inference.CodeInvalidArg, "inference request to model 'seq' must specify a non-zero or non-empty correlation ID"},
		{"unknown sequence", s, &inference.Request{ModelName: "seq", Inputs: in, Parameters: inference.Parameters{"sequence_id": uint64(99)}},
			inference.CodeInvalidArg, "inference request for sequence 99 to model 'seq' must specify the START flag on the first request of the sequence"},
		{"client sends a control input", s, &inference.Request{ModelName: "seq", Parameters: inference.Parameters{"sequence_id": uint64(5), "sequence_start": true},
			Inputs: append(append([]inference.Tensor{}, in...), inference.Tensor{Name: "INPUT1", DataType: inference.Int32, Shape: []int64{1, 1}, Data: int32s(1)})},
			inference.CodeInvalidArg, "unexpected inference input 'INPUT1' for model 'seq'"},
		{"batch of two", s, &inference.Request{ModelName: "seq", Parameters: inference.Parameters{"sequence_id": uint64(5), "sequence_start": true},
			Inputs: []inference.Tensor{{Name: "INPUT0", DataType: inference.Int32, Shape: []int64{2, 1}, Data: int32s(1, 2)}}},
			inference.CodeInvalidArg, "must specify batch-size 1 due to requirements of sequence batcher"},
		{"id on a model without a sequence batcher", plain, &inference.Request{ModelName: "ident", Parameters: inference.Parameters{"sequence_id": "abc"},
			Inputs: []inference.Tensor{{Name: "INPUT0", DataType: inference.Int32, Shape: []int64{1, 2}, Data: int32s(1, 2)}}},
			inference.CodeInvalidArg, "inference request to model 'ident' has sequence ID abc, but the model has no sequence batcher"},
	}
	for _, c := range cases {
		_, err := c.srv.Infer(context.Background(), c.req)
		if err == nil || inference.CodeOf(err) != c.code || !strings.Contains(err.Error(), c.substr) {
			t.Errorf("%s: %v (%v), want %v containing %q", c.name, err, inference.CodeOf(err), c.code, c.substr)
		}
	}
}

func TestInjectedInputsAreNotRequired(t *testing.T) {
	// The configuration also lists the control input as an input, as an
	// auto-completed ONNX model would: clients still need not send it.
	text := strings.Replace(sequenceConfig,
		`input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 1 ] } ]`,
		`input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 1 ] }, { name: "INPUT1" data_type: TYPE_INT32 dims: [ 1 ] } ]`, 1)
	s, err := loadTestModel(t, LoaderOptions{}, "seq", text, seqDir(t))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := seqInfer(s, uint64(1), true, true, 5)
	if err != nil {
		t.Fatal(err)
	}
	if got := outInt(t, resp, "OUTPUT1"); got != 1 {
		t.Errorf("START control %d, want 1", got)
	}
}

func TestInitialStateErrors(t *testing.T) {
	dir := t.TempDir() // no initial_state folder
	_, err := loadTestModel(t, LoaderOptions{}, "seq", sequenceConfig, dir)
	if err == nil || !strings.Contains(err.Error(), "unable to read initial_state data_file for state input 'INPUT3'") {
		t.Fatalf("missing data file: %v", err)
	}
	short := strings.Replace(sequenceConfig, `dims: [ 1 ] data_file`, `dims: [ 2 ] data_file`, 1)
	short = strings.Replace(short, `output_name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 1 ]`, `output_name: "OUTPUT0" data_type: TYPE_INT32 dims: [ -1 ]`, 1)
	_, err = loadTestModel(t, LoaderOptions{}, "seq", short, seqDir(t))
	if err == nil || err.Error() != "initial_state setting expects 8 bytes, but the data provided from seed.bin only has 4 bytes." {
		t.Fatalf("short data file: %v", err)
	}
}

const cachedConfig = `
name: "cached"
backend: "identity"
max_batch_size: 4
input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 2 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 2 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
response_cache { enable: true }
`

func TestResponseCacheStatistics(t *testing.T) {
	c := cache.NewLocal(1 << 20)
	s, err := loadTestModel(t, LoaderOptions{Cache: c}, "cached", cachedConfig, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	infer := func(a, b int32) *inference.Response {
		t.Helper()
		data := int32s(a, b) // a fresh buffer each time: the cache must not alias it
		resp, err := s.Infer(context.Background(), &inference.Request{ID: "r", ModelName: "cached",
			Inputs: []inference.Tensor{{Name: "INPUT0", DataType: inference.Int32, Shape: []int64{1, 2}, Data: data}}})
		if err != nil {
			t.Fatal(err)
		}
		copy(data, int32s(-1, -1))
		return resp
	}
	infer(1, 2)         // miss
	resp := infer(1, 2) // hit
	infer(3, 4)         // miss
	if got := outInt(t, resp, "OUTPUT0"); got != 1 || resp.ID != "r" || resp.ModelVersion != "1" {
		t.Errorf("cached response %+v", resp)
	}
	st, err := s.ModelStatistics(context.Background(), "cached", "")
	if err != nil {
		t.Fatal(err)
	}
	ms := st.ModelStats[0]
	is := ms.InferenceStats
	if is.CacheHit.Count != 1 || is.CacheMiss.Count != 2 || is.Success.Count != 3 {
		t.Errorf("cache_hit %d cache_miss %d success %d, want 1, 2, 3", is.CacheHit.Count, is.CacheMiss.Count, is.Success.Count)
	}
	if ms.InferenceCount != 2 || ms.ExecutionCount != 2 {
		t.Errorf("inference_count %d execution_count %d, want 2 and 2 (hits excluded)", ms.InferenceCount, ms.ExecutionCount)
	}
	if is.Queue.Count != is.Success.Count || is.ComputeInfer.Count != is.Success.Count {
		t.Errorf("queue %d compute_infer %d counts differ from success %d", is.Queue.Count, is.ComputeInfer.Count, is.Success.Count)
	}
}

func TestRateLimiterRejectsTooFewResources(t *testing.T) {
	rl := ratelimit.New(ratelimit.Options{Mode: ratelimit.ExecutionCount,
		Resources: []ratelimit.Resource{{Name: "R1", Count: 1, Device: ratelimit.AnyDevice}}})
	text := strings.Replace(cachedConfig, `instance_group [ { count: 1 kind: KIND_CPU } ]`,
		`instance_group [ { count: 2 kind: KIND_CPU rate_limiter { resources [ { name: "R1" count: 2 } ] priority: 1 } } ]`, 1)
	_, err := loadTestModel(t, LoaderOptions{RateLimiter: rl}, "cached", text, t.TempDir())
	want := `Resource count for "R1" is limited to 1 which will prevent scheduling of one or more model instances, the minimum required count is 2`
	if err == nil || err.Error() != want {
		t.Fatalf("load error %v, want %q", err, want)
	}
	// With enough copies it loads and serves.
	rl = ratelimit.New(ratelimit.Options{Mode: ratelimit.ExecutionCount})
	s, err := loadTestModel(t, LoaderOptions{RateLimiter: rl}, "cached", text, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Infer(context.Background(), &inference.Request{ModelName: "cached",
		Inputs: []inference.Tensor{{Name: "INPUT0", DataType: inference.Int32, Shape: []int64{1, 2}, Data: int32s(1, 2)}}}); err != nil {
		t.Fatal(err)
	}
}

func TestSequenceControlEncodings(t *testing.T) {
	sb := &inferencepb.ModelSequenceBatching{}
	text := `
control_input [
  { name: "S" control [ { kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1.5 ] } ] },
  { name: "E" control [ { kind: CONTROL_SEQUENCE_END bool_false_true: [ false, true ] } ] },
  { name: "R" control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [ -1, 7 ] } ] },
  { name: "C" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_INT32 } ] }
]
state [ { input_name: "IN" output_name: "OUT" data_type: TYPE_FP32 dims: [ 2, -1 ]
          initial_state { name: "z" data_type: TYPE_FP32 dims: [ 2, 3 ] zero_data: true } } ]`
	if err := prototext.Unmarshal([]byte(text), sb); err != nil {
		t.Fatal(err)
	}
	cfg := &inferencepb.ModelConfig{Name: "m", SchedulingChoice: &inferencepb.ModelConfig_SequenceBatching{SequenceBatching: sb}}
	opts, err := sequenceOptions(cfg, t.TempDir(), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		dt      inference.DataType
		off, on string
	}{
		{inference.FP32, "\x00\x00\x00\x00", "\x00\x00\xc0\x3f"},
		{inference.Bool, "\x00", "\x01"},
		{inference.Int32, "\xff\xff\xff\xff", "\x07\x00\x00\x00"},
		{inference.Int32, "", ""},
	}
	for i, w := range want {
		c := opts.Controls[i]
		if c.DataType != w.dt || string(c.False) != w.off || string(c.True) != w.on {
			t.Errorf("control %s: %v %x %x, want %v %x %x", c.Name, c.DataType, c.False, c.True, w.dt, w.off, w.on)
		}
	}
	st := opts.States[0]
	if st.Data != nil || len(st.Shape) != 2 || st.Shape[1] != 3 {
		t.Errorf("zero_data state %+v, want shape [2 3] and zeros", st)
	}
}

func TestInitialStateRejectsBadFilesAndShapes(t *testing.T) {
	outside := strings.Replace(sequenceConfig, `data_file: "seed.bin"`, `data_file: "../../seed.bin"`, 1)
	_, err := loadTestModel(t, LoaderOptions{}, "seq", outside, seqDir(t))
	if err == nil || !strings.Contains(err.Error(), "initial_state data_file '../../seed.bin' for state input 'INPUT3' must be a relative path") {
		t.Errorf("data_file outside the model: %v", err)
	}
	// A shape whose byte size overflows fails the load instead of
	// panicking on the data file's slice.
	huge := strings.Replace(sequenceConfig,
		`data_type: TYPE_INT32 dims: [ 1 ]
    initial_state { name: "seed" data_type: TYPE_INT32 dims: [ 1 ]`,
		`data_type: TYPE_INT32 dims: [ -1, -1 ]
    initial_state { name: "seed" data_type: TYPE_INT32 dims: [ 4611686018427387904, 4 ]`, 1)
	_, err = loadTestModel(t, LoaderOptions{}, "seq", huge, seqDir(t))
	if err == nil || !strings.Contains(err.Error(), "byte size overflows") {
		t.Errorf("overflowing initial_state shape: %v", err)
	}
	negative := strings.Replace(sequenceConfig,
		`data_type: TYPE_INT32 dims: [ 1 ]
    initial_state`, `data_type: TYPE_INT32 dims: [ -3 ]
    initial_state`, 1)
	_, err = loadTestModel(t, LoaderOptions{}, "seq", negative, seqDir(t))
	if err == nil || !strings.Contains(err.Error(), "invalid dimension -3") {
		t.Errorf("negative state dimension: %v", err)
	}
}
