package server

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/encoding/prototext"

	"github.com/nereid-project/nereid/backends"
	_ "github.com/nereid-project/nereid/backends/aggregate"
	_ "github.com/nereid-project/nereid/backends/repeat"
	_ "github.com/nereid-project/nereid/backends/route"
	_ "github.com/nereid-project/nereid/backends/square"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/repository"
)

// warmLog is a loader's log, for the "instance warmed up" lines.
type warmLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *warmLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

// warmed is one "instance warmed up" line.
type warmed struct {
	Model      string `json:"model"`
	Instance   string `json:"instance"`
	Samples    int    `json:"samples"`
	Executions int    `json:"executions"`
	Responses  int    `json:"responses"`
}

// warmedUp returns the "instance warmed up" lines logged so far, by
// instance.
func (w *warmLog) warmedUp(t *testing.T) map[string]warmed {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]warmed{}
	for line := range strings.SplitSeq(strings.TrimSpace(w.buf.String()), "\n") {
		var e struct {
			warmed
			Message string `json:"message"`
		}
		if line == "" || json.Unmarshal([]byte(line), &e) != nil || e.Message != "instance warmed up" {
			continue
		}
		out[e.Instance] = e.warmed
	}
	return out
}

// warmLoader is a loader whose debug log a test reads.
func warmLoader() (*Loader, *warmLog) {
	w := &warmLog{}
	return NewLoader(LoaderOptions{Logger: zerolog.New(w).Level(zerolog.DebugLevel)}), w
}

// loadText completes and loads the model of a config.pbtxt text from dir
// (a model directory, which may be empty), as the repository does.
func loadText(t *testing.T, l *Loader, dir, text string) (*loadedModel, error) {
	t.Helper()
	cfg := &inferencepb.ModelConfig{}
	if err := prototext.Unmarshal([]byte(text), cfg); err != nil {
		t.Fatal(err)
	}
	if err := l.Complete(context.Background(), dir, cfg, true); err != nil {
		return nil, err
	}
	s, err := l.LoadVersion(context.Background(), repository.VersionSpec{
		Name: cfg.GetName(), Version: 1, Config: cfg, ModelDir: dir, VersionDir: filepath.Join(dir, "1"),
	})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s.(*loadedModel), nil
}

// writeWarmupFile writes <dir>/warmup/<name>.
func writeWarmupFile(t *testing.T, dir, name string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "warmup"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "warmup", name), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// recorder is the "warm_recorder" test backend: a unary model whose
// instances record every batch they execute, and fail a request whose
// INPUT0 starts with 0xff. It stands for a backend's instance where a test
// must see exactly what each instance was given.
type recorder struct {
	mu        sync.Mutex
	instances []*recInstance
	events    []string // "new <instance>", "exec <instance>", "close <instance>"
}

type recInstance struct {
	r       *recorder
	name    string
	batches [][]*inference.Request
}

var warmRecorder = &recorder{}

func init() { backends.Register("warm_recorder", warmRecorder) }

func (r *recorder) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.instances, r.events = nil, nil
}

func (r *recorder) Load(context.Context, backends.ModelSpec) (backends.Model, error) { return r, nil }

func (r *recorder) NewInstance(_ context.Context, spec backends.InstanceSpec) (backends.Instance, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := &recInstance{r: r, name: spec.Name}
	r.instances = append(r.instances, i)
	r.events = append(r.events, "new "+spec.Name)
	return backends.Unary(i), nil
}

func (i *recInstance) ExecuteWithPhases(_ context.Context, batch []*inference.Request) ([]*inference.Response, backends.Phases, error) {
	i.r.mu.Lock()
	defer i.r.mu.Unlock()
	i.batches = append(i.batches, batch)
	i.r.events = append(i.r.events, "exec "+i.name)
	out := make([]*inference.Response, len(batch))
	for k, req := range batch {
		if in := req.Input("INPUT0"); in != nil && len(in.Data) > 0 && in.Data[0] == 0xff {
			return nil, backends.Phases{}, inference.InvalidArg("INPUT0 starts with 0xff")
		}
		out[k] = &inference.Response{Outputs: []inference.Tensor{{Name: "OUTPUT0", DataType: inference.Int32, Shape: []int64{1, 1}, Data: make([]byte, 4)}}}
	}
	return out, backends.Phases{}, nil
}

func (i *recInstance) Close() error {
	i.r.mu.Lock()
	defer i.r.mu.Unlock()
	i.r.events = append(i.r.events, "close "+i.name)
	return nil
}

const recorderConfig = `name: "rec" backend: "warm_recorder" max_batch_size: 4
	input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 1 ] } ]
	output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 1 ] } ]
	instance_group [ { name: "a" count: 2 kind: KIND_CPU }, { name: "b" count: 1 kind: KIND_CPU } ]
`

// TestWarmupPerInstance: every instance runs every sample count times, in
// batches of batch_size requests, right after it is built and before the
// next one is; the model is loaded only then.
func TestWarmupPerInstance(t *testing.T) {
	warmRecorder.reset()
	l, log := warmLoader()
	dir := t.TempDir()
	writeWarmupFile(t, dir, "seven", int32s(7))
	lm, err := loadText(t, l, dir, recorderConfig+`model_warmup [
		{ name: "zeros" batch_size: 3 count: 2 inputs { key: "INPUT0" value { data_type: TYPE_INT32 dims: [ 1 ] zero_data: true } } },
		{ name: "file" batch_size: 1 inputs { key: "INPUT0" value { data_type: TYPE_INT32 dims: [ 1 ] input_data_file: "seven" } } } ]`)
	if err != nil {
		t.Fatal(err)
	}
	warmRecorder.mu.Lock()
	defer warmRecorder.mu.Unlock()
	want := []string{"new a_0", "exec a_0", "exec a_0", "exec a_0", "new a_1", "exec a_1", "exec a_1", "exec a_1", "new b_0", "exec b_0", "exec b_0", "exec b_0"}
	if !slices.Equal(warmRecorder.events, want) {
		t.Fatalf("events %v\nwant %v", warmRecorder.events, want)
	}
	for _, inst := range warmRecorder.instances {
		sizes := []int{len(inst.batches[0]), len(inst.batches[1]), len(inst.batches[2])}
		if !slices.Equal(sizes, []int{3, 3, 1}) {
			t.Errorf("%s: batch sizes %v", inst.name, sizes)
		}
		if got := inst.batches[2][0].Input("INPUT0"); got == nil || !slices.Equal(got.Shape, []int64{1, 1}) || !bytes.Equal(got.Data, int32s(7)) {
			t.Errorf("%s: file sample input %+v", inst.name, got)
		}
	}
	if got := log.warmedUp(t); len(got) != 3 || got["b_0"] != (warmed{Model: "rec", Instance: "b_0", Samples: 2, Executions: 3, Responses: 7}) {
		t.Errorf("log %+v", got)
	}
	// Warm-up executions are not inference: the statistics have none.
	lm.stats.mu.Lock()
	n := lm.stats.executionCount
	lm.stats.mu.Unlock()
	if n != 0 {
		t.Errorf("execution count %d after warm-up", n)
	}
}

// TestWarmupFailureFailsTheLoad: a sample that fails on an instance fails
// the load with a message naming the model, the instance and the sample,
// and every instance built so far is closed.
func TestWarmupFailureFailsTheLoad(t *testing.T) {
	warmRecorder.reset()
	l, _ := warmLoader()
	dir := t.TempDir()
	writeWarmupFile(t, dir, "bad", []byte{0xff, 0, 0, 0})
	_, err := loadText(t, l, dir, recorderConfig+`model_warmup [
		{ name: "fine" batch_size: 1 inputs { key: "INPUT0" value { data_type: TYPE_INT32 dims: [ 1 ] zero_data: true } } },
		{ name: "poison" batch_size: 2 inputs { key: "INPUT0" value { data_type: TYPE_INT32 dims: [ 1 ] input_data_file: "bad" } } } ]`)
	if err == nil || err.Error() != "model 'rec', instance a_0: warm-up sample 'poison' failed: INPUT0 starts with 0xff" || inference.CodeOf(err) != inference.CodeInvalidArg {
		t.Fatalf("%v", err)
	}
	warmRecorder.mu.Lock()
	defer warmRecorder.mu.Unlock()
	if want := []string{"new a_0", "exec a_0", "exec a_0", "close a_0"}; !slices.Equal(warmRecorder.events, want) {
		t.Fatalf("events %v, want %v", warmRecorder.events, want)
	}
}

// TestWarmupSampleChecked: a sample is checked as a request would be, and
// refused, before any instance is built.
func TestWarmupSampleChecked(t *testing.T) {
	warmRecorder.reset()
	l, _ := warmLoader()
	for text, want := range map[string]string{
		`model_warmup [ { name: "wide" batch_size: 1 inputs { key: "INPUT0" value { data_type: TYPE_INT32 dims: [ 2 ] zero_data: true } } } ]`: "model 'rec' warm-up sample 'wide': unexpected shape for input 'INPUT0' for model 'rec'. Expected [-1,1], got [1,2]",
		`model_warmup [ { name: "big" batch_size: 5 inputs { key: "INPUT0" value { data_type: TYPE_INT32 dims: [ 1 ] zero_data: true } } } ]`:  "model 'rec' warm-up sample 'big': batch_size 5 exceeds max_batch_size 4",
		`model_warmup [ { name: "none" batch_size: 1 } ]`: "model 'rec' warm-up sample 'none': no data for input 'INPUT0'",
	} {
		if _, err := loadText(t, l, t.TempDir(), recorderConfig+text); err == nil || !strings.Contains(err.Error(), want) || inference.CodeOf(err) != inference.CodeInvalidArg {
			t.Errorf("%v\nwant %q", err, want)
		}
	}
	warmRecorder.mu.Lock()
	defer warmRecorder.mu.Unlock()
	if len(warmRecorder.events) != 0 {
		t.Errorf("events %v", warmRecorder.events)
	}
}

// TestWarmupSequenceControls: a sequence model's sample may leave out the
// controls and the state, which the scheduler supplies to requests: each
// warm-up execution is then a sequence of one request (START, END and
// READY true, correlation ID 0, the initial state). A control the sample
// gives is taken as given.
func TestWarmupSequenceControls(t *testing.T) {
	warmRecorder.reset()
	l, _ := warmLoader()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, initialStateDir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, initialStateDir, "init"), int32s(40, 2), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := loadText(t, l, dir, `name: "seq" backend: "warm_recorder" max_batch_size: 2 instance_group [ { name: "seq" kind: KIND_CPU } ]
		input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 1 ] } ]
		output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 1 ] } ]
		sequence_batching {
			control_input [
				{ name: "START" control [ { kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] } ] },
				{ name: "END" control [ { kind: CONTROL_SEQUENCE_END int32_false_true: [ 1, 0 ] } ] },
				{ name: "READY" control [ { kind: CONTROL_SEQUENCE_READY bool_false_true: [ false, true ] } ] },
				{ name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] } ]
			state [ { input_name: "STATE_IN" output_name: "STATE_OUT" data_type: TYPE_INT32 dims: [ 2 ]
				initial_state { name: "init" data_type: TYPE_INT32 dims: [ 2 ] data_file: "init" } } ]
		}
		model_warmup [
			{ name: "implicit" batch_size: 2 inputs { key: "INPUT0" value { data_type: TYPE_INT32 dims: [ 1 ] zero_data: true } } },
			{ name: "given" batch_size: 1 inputs [
				{ key: "INPUT0" value { data_type: TYPE_INT32 dims: [ 1 ] zero_data: true } },
				{ key: "START" value { data_type: TYPE_FP32 dims: [ 1 ] zero_data: true } } ] } ]`)
	if err != nil {
		t.Fatal(err)
	}
	warmRecorder.mu.Lock()
	defer warmRecorder.mu.Unlock()
	batches := warmRecorder.instances[0].batches
	if len(batches) != 2 || len(batches[0]) != 2 {
		t.Fatalf("%d batches", len(batches))
	}
	req := batches[0][1]
	for name, want := range map[string][]byte{
		"INPUT0":   int32s(0),
		"START":    float32s(1),
		"END":      int32s(0), // END's true value is 0 here
		"READY":    {1},
		"CORRID":   make([]byte, 8),
		"STATE_IN": int32s(40, 2),
	} {
		in := req.Input(name)
		if in == nil || !bytes.Equal(in.Data, want) || in.Shape[0] != 1 {
			t.Errorf("%s: %+v, want data %v", name, in, want)
		}
	}
	if s, _ := req.Parameters.Bool("sequence_start"); !s {
		t.Errorf("parameters %v", req.Parameters)
	}
	if e, _ := req.Parameters.Bool("sequence_end"); !e {
		t.Errorf("parameters %v", req.Parameters)
	}
	if got := batches[1][0].Input("START"); got == nil || !bytes.Equal(got.Data, float32s(0)) {
		t.Errorf("given START %+v", got)
	}
}

func float32s(v ...float32) []byte {
	out := make([]byte, 0, 4*len(v))
	for _, x := range v {
		out = append(out, int32s(int32(math.Float32bits(x)))...)
	}
	return out
}

// TestWarmupBuiltinBackends: the Go backends warm up through the loader,
// decoupled ones with every response consumed; a request that a backend
// fails fails the load, naming the sample.
func TestWarmupBuiltinBackends(t *testing.T) {
	l, log := warmLoader()
	dir := t.TempDir()
	writeWarmupFile(t, dir, "three", int32s(3))
	writeWarmupFile(t, dir, "minus", int32s(-1))
	writeWarmupFile(t, dir, "class2", int32s(2))
	cases := []struct {
		name, config string
		responses    int    // per instance
		fails        string // the load's error, when it fails
	}{
		{"identity", `name: "identity" backend: "identity" max_batch_size: 8
			input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ] output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
			instance_group [ { name: "identity" count: 2 kind: KIND_CPU } ]
			model_warmup [ { name: "w" batch_size: 4 count: 3 inputs { key: "INPUT0" value { data_type: TYPE_FP32 dims: [ 16 ] random_data: true } } } ]`, 12, ""},
		{"repeat", `name: "repeat" instance_group [ { name: "repeat" kind: KIND_CPU } ] backend: "repeat" max_batch_size: 0 model_transaction_policy { decoupled: true }
			input [ { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] }, { name: "DELAY" data_type: TYPE_UINT32 dims: [ -1 ] }, { name: "WAIT" data_type: TYPE_UINT32 dims: [ 1 ] } ]
			output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] }, { name: "IDX" data_type: TYPE_UINT32 dims: [ 1 ] } ]
			model_warmup [ { name: "five" batch_size: 1 count: 2 inputs [
				{ key: "IN" value { data_type: TYPE_INT32 dims: [ 5 ] zero_data: true } },
				{ key: "DELAY" value { data_type: TYPE_UINT32 dims: [ 5 ] zero_data: true } },
				{ key: "WAIT" value { data_type: TYPE_UINT32 dims: [ 1 ] zero_data: true } } ] } ]`, 10, ""},
		{"square", `name: "square" instance_group [ { name: "square" kind: KIND_CPU } ] backend: "square" max_batch_size: 0 model_transaction_policy { decoupled: true }
			input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ] output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
			model_warmup [ { name: "three" batch_size: 1 inputs { key: "IN" value { data_type: TYPE_INT32 dims: [ 1 ] input_data_file: "three" } } } ]`, 3, ""},
		{"square_fails", `name: "square_fails" instance_group [ { name: "square_fails" kind: KIND_CPU } ] backend: "square" max_batch_size: 0 model_transaction_policy { decoupled: true }
			input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ] output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
			model_warmup [ { name: "negative" batch_size: 1 inputs { key: "IN" value { data_type: TYPE_INT32 dims: [ 1 ] input_data_file: "minus" } } } ]`, 0,
			"model 'square_fails', instance square_fails_0: warm-up sample 'negative' failed"},
		{"route", `name: "route" instance_group [ { name: "route" kind: KIND_CPU } ] backend: "route" max_batch_size: 8
			input [ { name: "CLASS" data_type: TYPE_INT32 dims: [ 1 ] }, { name: "FEATURES" data_type: TYPE_FP32 dims: [ 4 ] } ]
			output [ { name: "ORANGE" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "APPLE" data_type: TYPE_FP32 dims: [ 4 ] } ]
			parameters { key: "selector" value: { string_value: "CLASS" } } parameters { key: "table" value: { string_value: "0:ORANGE,1:APPLE" } }
			model_warmup [ { name: "orange" batch_size: 2 inputs [
				{ key: "CLASS" value { data_type: TYPE_INT32 dims: [ 1 ] zero_data: true } },
				{ key: "FEATURES" value { data_type: TYPE_FP32 dims: [ 4 ] random_data: true } } ] } ]`, 2, ""},
		{"route_fails", `name: "route_fails" instance_group [ { name: "route_fails" kind: KIND_CPU } ] backend: "route" max_batch_size: 8
			input [ { name: "CLASS" data_type: TYPE_INT32 dims: [ 1 ] }, { name: "FEATURES" data_type: TYPE_FP32 dims: [ 4 ] } ]
			output [ { name: "ORANGE" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "APPLE" data_type: TYPE_FP32 dims: [ 4 ] } ]
			parameters { key: "selector" value: { string_value: "CLASS" } } parameters { key: "table" value: { string_value: "0:ORANGE,1:APPLE" } }
			model_warmup [ { name: "pear" batch_size: 1 inputs [
				{ key: "CLASS" value { data_type: TYPE_INT32 dims: [ 1 ] input_data_file: "class2" } },
				{ key: "FEATURES" value { data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } } ] } ]`, 0,
			"model 'route_fails', instance route_fails_0: warm-up sample 'pear' failed"},
		{"aggregate", `name: "aggregate" instance_group [ { name: "aggregate" kind: KIND_CPU } ] backend: "aggregate" max_batch_size: 8
			input [ { name: "A" data_type: TYPE_FP32 dims: [ 1 ] }, { name: "B" data_type: TYPE_FP32 dims: [ 1 ] } ]
			output [ { name: "MEAN" data_type: TYPE_FP32 dims: [ 1 ] } ]
			parameters { key: "method" value: { string_value: "mean" } }
			model_warmup [ { name: "w" batch_size: 8 inputs [
				{ key: "A" value { data_type: TYPE_FP32 dims: [ 1 ] random_data: true } },
				{ key: "B" value { data_type: TYPE_FP32 dims: [ 1 ] zero_data: true } } ] } ]`, 8, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadText(t, l, dir, tc.config)
			if tc.fails != "" {
				if err == nil || !strings.Contains(err.Error(), tc.fails) {
					t.Fatalf("%v\nwant %q", err, tc.fails)
				}
				t.Log(err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := log.warmedUp(t)
			n := 0
			for _, w := range got {
				if w.Model != tc.name {
					continue
				}
				n++
				if w.Responses != tc.responses {
					t.Errorf("%s: %d responses, want %d", w.Instance, w.Responses, tc.responses)
				}
			}
			if n == 0 {
				t.Fatalf("no instance of %s warmed up: %+v", tc.name, got)
			}
		})
	}
	if got := log.warmedUp(t); got["identity_0"].Executions != 3 || got["identity_1"].Executions != 3 {
		t.Errorf("identity: both instances warm up: %+v", got)
	}
}

// TestWarmupRefusedForEnsembles: Triton refuses model_warmup on an
// ensemble; the repository's configuration check does (its tests), and so
// does the loader itself.
func TestWarmupRefusedForEnsembles(t *testing.T) {
	l, _ := warmLoader()
	text := `name: "ens" platform: "ensemble" max_batch_size: 4
		input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ] output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
		ensemble_scheduling { step [ { model_name: "rec" model_version: -1 input_map { key: "INPUT0" value: "IN" } output_map { key: "OUTPUT0" value: "OUT" } } ] }
		model_warmup [ { name: "w" batch_size: 1 inputs { key: "IN" value { data_type: TYPE_INT32 dims: [ 1 ] zero_data: true } } } ]`
	cfg := &inferencepb.ModelConfig{}
	if err := prototext.Unmarshal([]byte(text), cfg); err != nil {
		t.Fatal(err)
	}
	_, err := l.LoadVersion(context.Background(), repository.VersionSpec{Name: "ens", Version: 1, Config: cfg, ModelDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "model_warmup can not be specified for ensemble 'ens'") || inference.CodeOf(err) != inference.CodeInvalidArg {
		t.Fatalf("loader: %v", err)
	}
}
