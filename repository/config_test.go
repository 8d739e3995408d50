package repository

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/nereid-project/nereid/proto/inferencepb"
)

// completeText runs the whole configuration path on config text.
func completeText(t *testing.T, name, text string) (*inferencepb.ModelConfig, error) {
	t.Helper()
	cfg, err := parseConfigText("config.pbtxt", []byte(text))
	if err != nil {
		return nil, err
	}
	return completeConfig(name, "", cfg, noGPUs, nil)
}

// noGPUs is a machine without GPUs.
func noGPUs() []int32 { return nil }

// TestGPUInstanceGroups checks KIND_GPU groups against the machine's GPUs
// with Triton's texts (those of a Triton without GPUs, checked against
// tritonserver 2.51 for the two refusals).
func TestGPUInstanceGroups(t *testing.T) {
	const io = `
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]`
	two := func() []int32 { return []int32{0, 1} }
	tests := []struct {
		name, text string
		gpus       func() []int32
		want       string  // error text; "" means it is accepted
		filled     []int32 // the group's GPUs after normalization
	}{
		{"no GPU on the machine", `backend: "fake" instance_group [ { kind: KIND_GPU } ]` + io, noGPUs,
			"instance group m_0 of model m has kind KIND_GPU but no GPUs are available", nil},
		{"named GPU missing", `backend: "fake" instance_group [ { kind: KIND_GPU gpus: [ 0 ] } ]` + io, noGPUs,
			"instance group m_0 of model m specifies invalid or unsupported gpu id 0. " +
				"GPUs with at least the minimum required CUDA compute compatibility of 6.000000 are: ", nil},
		{"named GPU beyond the machine's", `backend: "fake" instance_group [ { name: "g" kind: KIND_GPU gpus: [ 1, 2 ] } ]` + io, two,
			"instance group g of model m specifies invalid or unsupported gpu id 2. " +
				"GPUs with at least the minimum required CUDA compute compatibility of 6.000000 are: 0 1 ", nil},
		{"no GPUs named: all of them", `backend: "fake" instance_group [ { kind: KIND_GPU } ]` + io, two, "", []int32{0, 1}},
		{"GPUs named", `backend: "fake" instance_group [ { kind: KIND_GPU gpus: [ 1 ] } ]` + io, two, "", []int32{1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseConfigText("config.pbtxt", []byte(tt.text))
			if err != nil {
				t.Fatal(err)
			}
			got, err := completeConfig("m", "", cfg, tt.gpus, nil)
			if tt.want != "" {
				if err == nil || err.Error() != tt.want {
					t.Fatalf("error %v, want %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g := got.InstanceGroup[0].Gpus; !slices.Equal(g, tt.filled) {
				t.Fatalf("gpus %v, want %v", g, tt.filled)
			}
		})
	}
	// A model without a KIND_GPU group never asks for the GPUs.
	cfg, err := parseConfigText("config.pbtxt", []byte(`backend: "fake"`+io))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := completeConfig("m", "", cfg, func() []int32 { panic("GPUs asked for a CPU model") }, nil); err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidationErrors(t *testing.T) {
	const io = `
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]`
	tests := []struct {
		name, text, want string
	}{
		{"parse error", `backend: "fake" max_batch_size: "x"`, "config.pbtxt: failed to parse model configuration"},
		{"unknown field", `backend: "fake" no_such_field: 1`, "no_such_field"},
		{"name mismatch", `name: "other" backend: "fake"` + io,
			"unexpected directory name 'm' for model 'other', directory name must equal model name"},
		{"no backend", `name: "m" platform: "mystery"` + io, "unexpected platform type 'mystery' for m"},
		{"no backend hint", `name: "m"` + io, "Could not determine backend for model 'm'"},
		{"backend platform pair", `backend: "onnxruntime" platform: "tensorrt_plan"` + io,
			"unexpected 'platform' and 'backend' pair, got:tensorrt_plan, onnxruntime"},
		{"negative batch", `backend: "fake" max_batch_size: -1` + io, "'max_batch_size' must be non-negative value for m"},
		{"input no data_type", `backend: "fake" input [ { name: "INPUT0" dims: [ 4 ] } ]`,
			"model input 'INPUT0' must specify 'data_type' for m"},
		{"input unknown data_type", `backend: "fake" input [ { name: "INPUT0" data_type: 99 dims: [ 4 ] } ]`,
			"model input 'INPUT0' has unknown 'data_type' 99"},
		{"input no name", `backend: "fake" input [ { data_type: TYPE_FP32 dims: [ 4 ] } ]`,
			"model input must specify 'name' for m"},
		{"output no dims", `backend: "fake" output [ { name: "OUT" data_type: TYPE_FP32 } ]`,
			"model output 'OUT' must specify 'dims' for m"},
		{"zero dim", `backend: "fake" input [ { name: "IN" data_type: TYPE_FP32 dims: [ 0 ] } ]`,
			"model input 'IN' dimension must be integer >= 1, or -1 to indicate a variable-size dimension for m"},
		{"dim below -1", `backend: "fake" input [ { name: "IN" data_type: TYPE_FP32 dims: [ -2 ] } ]`,
			"dimension must be integer >= 1"},
		{"duplicate input", `backend: "fake" input [ { name: "IN" data_type: TYPE_FP32 dims: [ 1 ] }, { name: "IN" data_type: TYPE_FP32 dims: [ 1 ] } ]`,
			"model input 'IN' is specified more than once for m"},
		{"reshape size", `backend: "fake" input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] reshape { shape: [ 3 ] } } ]`,
			"model input 'IN' has different size for dims and reshape"},
		{"empty reshape non-batching", `backend: "fake" input [ { name: "IN" data_type: TYPE_FP32 dims: [ 1 ] reshape { } } ]`,
			"cannot have empty reshape for non-batching model"},
		{"preferred too big", `backend: "fake" max_batch_size: 4 dynamic_batching { preferred_batch_size: [ 8 ] }` + io,
			"dynamic batching preferred size must be <= max batch size for m"},
		{"preferred not positive", `backend: "fake" max_batch_size: 4 dynamic_batching { preferred_batch_size: [ 0 ] }` + io,
			"dynamic batching preferred size must be positive for m"},
		{"priority level", `backend: "fake" max_batch_size: 4 dynamic_batching { priority_levels: 2 default_priority_level: 3 }` + io,
			"default priority level must be in range [1, 2] for m"},
		{"sequence control", `backend: "fake" sequence_batching { control_input [ { name: "START" control [ { kind: CONTROL_SEQUENCE_START } ] } ] }` + io,
			"sequence batching must specify either 'int32_false_true', 'fp32_false_true' or 'bool_false_true' for CONTROL_SEQUENCE_START for m"},
		{"corrid type", `backend: "fake" sequence_batching { control_input [ { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_FP32 } ] } ] }` + io,
			"unexpected data type for control CONTROL_SEQUENCE_CORRID for m"},
		{"cpu group with gpus", `backend: "fake" instance_group [ { kind: KIND_CPU gpus: [ 0 ] } ]` + io,
			"instance group m_0 of model m has kind KIND_CPU but specifies one or more GPUs"},
		{"metrics unknown family", `backend: "fake" model_metrics { metric_control [ { metric_identifier { family: "nv_inference_request_success" } histogram_options { buckets: [ 1 ] } } ] }` + io,
			"model_metrics of model 'm': metric family 'nv_inference_request_success' has no histogram; the one histogram family is 'nv_inference_first_response_histogram_ms'"},
		{"metrics buckets order", `backend: "fake" model_metrics { metric_control [ { metric_identifier { family: "nv_inference_first_response_histogram_ms" } histogram_options { buckets: [ 1, 1 ] } } ] }` + io,
			"model_metrics of model 'm': the buckets of 'nv_inference_first_response_histogram_ms' must increase, but 1 follows 1"},
		{"ensemble without steps", `platform: "ensemble" ensemble_scheduling { }` + io,
			"must specify 'step' for ensemble 'm'"},
		{"ensemble with backend", `platform: "ensemble" backend: "fake"` + io,
			"Ensemble model 'm' must have platform type 'ensemble' and empty backend type"},
		{"ensemble step no input_map", `platform: "ensemble" ensemble_scheduling { step [ { model_name: "a" output_map { key: "x" value: "OUT" } } ] }` + io,
			"must specify 'input_map' in step 0 of ensemble 'm'"},
		{"ensemble platform no scheduling", `platform: "ensemble"` + io,
			"ensemble scheduling must be set for ensemble m whose platform is ensemble"},
		{"batch input kind source", `backend: "fake" max_batch_size: 2 batch_input [ { kind: BATCH_ELEMENT_COUNT target_name: "B" data_type: TYPE_INT32 } ]` + io,
			"batch input kind 'BATCH_ELEMENT_COUNT' expects 1 source input, got 0 for m"},
		{"batch output target", `backend: "fake" max_batch_size: 2 batch_output [ { kind: BATCH_SCATTER_WITH_INPUT_SHAPE target_name: "NOPE" source_input: "IN" } ]` + io,
			"unknown target output name 'NOPE' for m"},
		{"batch input data type", `backend: "fake" max_batch_size: 2 batch_input [ { kind: BATCH_ITEM_SHAPE target_name: "B" data_type: TYPE_FP64 source_input: "IN" } ]` + io,
			"batch input data type must be TYPE_INT32 or TYPE_FP32 for m"},
		{"shape tensor outside TensorRT", `backend: "fake" input [ { name: "S" data_type: TYPE_INT32 dims: [ 1 ] is_shape_tensor: true } ]`,
			"shape tensors are only supported for TensorRT platform for m"},
		{"NHWC needs 3 dims", `backend: "fake" input [ { name: "IMG" data_type: TYPE_FP32 format: FORMAT_NHWC dims: [ 4, 4 ] } ]`,
			"model input NHWC/NCHW require 3 dims for m"},
		{"preserve ordering with priorities", `backend: "fake" max_batch_size: 4 dynamic_batching { preserve_ordering: true priority_levels: 2 default_priority_level: 1 }` + io,
			"Only one priority level is allowed when 'preserve_ordering' is true for m"},
		{"preserve ordering with delay", `backend: "fake" max_batch_size: 4 dynamic_batching { preserve_ordering: true default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 10 } }` + io,
			"Queue policy can not have DELAY as timeout action when 'preserve_ordering' is true for m"},
		{"model group with gpus", `backend: "fake" instance_group [ { name: "g" kind: KIND_MODEL gpus: [ 1 ] } ]` + io,
			"instance group g of model m has kind KIND_MODEL but specifies one or more GPUs"},
		{"profile outside TensorRT", `backend: "fake" instance_group [ { profile: "0" } ]` + io,
			"instance group m_0 of model m and platform specifies profile field which is only supported for TensorRT models"},
		{"sequence slot utilization", `backend: "fake" sequence_batching { direct { minimum_slot_utilization: 2 } }` + io,
			"sequence batching minimum slot utilization must be in range (0.0, 1.0] for m"},
		{"ensemble with instance group", `platform: "ensemble" instance_group [ { count: 1 } ] ensemble_scheduling { step [
  { model_name: "a" input_map { key: "x" value: "IN" } output_map { key: "y" value: "OUT" } } ] }` + io,
			"instance group should not be specified for ensemble 'm'"},
		{"metrics family", `backend: "fake" model_metrics { metric_control [ { metric_identifier { } histogram_options { buckets: [ 1 ] } } ] }` + io,
			"metric identifier must specify non-empty 'family'"},
		{"decoupled cache", `backend: "fake" model_transaction_policy { decoupled: true } response_cache { enable: true }` + io,
			"Response Cache does not currently support model m with 'decoupled' transaction policy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := completeText(t, "m", tt.text)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	cfg, err := completeText(t, "m", `
backend: "fake"
max_batch_size: 8
dynamic_batching { }
input [ { name: "IN" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ -1 ] } ]`)
	if err != nil {
		t.Fatal(err)
	}
	want := &inferencepb.ModelConfig{}
	if err := prototext.Unmarshal([]byte(`
name: "m"
backend: "fake"
max_batch_size: 8
version_policy { latest { num_versions: 1 } }
dynamic_batching { preferred_batch_size: [ 8 ] }
input [ { name: "IN" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ -1 ] } ]
instance_group [ { name: "m" kind: KIND_CPU count: 1 } ]
optimization { input_pinned_memory { enable: true } output_pinned_memory { enable: true } }
`), want); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(cfg, want) {
		t.Errorf("completed config:\n%v\nwant:\n%v", prototext.Format(cfg), prototext.Format(want))
	}
}

func TestConfigDefaultsTable(t *testing.T) {
	tests := []struct {
		name, text string
		check      func(*inferencepb.ModelConfig) bool
	}{
		{"unnamed groups get model_index names", `backend: "fake" instance_group [ { count: 2 }, { name: "g" kind: KIND_AUTO } ]`,
			func(c *inferencepb.ModelConfig) bool {
				g := c.InstanceGroup
				return len(g) == 2 && g[0].Name == "m_0" && g[0].Count == 2 && g[0].Kind == inferencepb.ModelInstanceGroup_KIND_CPU &&
					g[1].Name == "g" && g[1].Count == 1 && g[1].Kind == inferencepb.ModelInstanceGroup_KIND_CPU
			}},
		{"onnxruntime CPU default count is 2", `platform: "onnxruntime_onnx"`,
			func(c *inferencepb.ModelConfig) bool {
				return c.Backend == "onnxruntime" && c.DefaultModelFilename == "model.onnx" && c.InstanceGroup[0].Count == 2
			}},
		{"sequence idle default", `backend: "fake" max_batch_size: 4 sequence_batching { oldest { } }`,
			func(c *inferencepb.ModelConfig) bool {
				sb := c.GetSequenceBatching()
				return sb.MaxSequenceIdleMicroseconds == 1_000_000 && slices.Equal(sb.GetOldest().PreferredBatchSize, []int32{4})
			}},
		{"existing optimization keeps fields and gains pinned memory", `backend: "fake" optimization { graph { level: 1 } input_pinned_memory { enable: false } }`,
			func(c *inferencepb.ModelConfig) bool {
				o := c.Optimization
				return o.Graph.GetLevel() == 1 && !o.InputPinnedMemory.Enable && o.OutputPinnedMemory.Enable
			}},
		{"ensemble gets no groups or optimization", `platform: "ensemble" ensemble_scheduling { step [ { model_name: "a" input_map { key: "x" value: "IN" } output_map { key: "y" value: "OUT" } } ] }
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 1 ] } ] output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 1 ] } ]`,
			func(c *inferencepb.ModelConfig) bool { return len(c.InstanceGroup) == 0 && c.Optimization == nil }},
		{"python from default_model_filename", `default_model_filename: "model.py"`,
			func(c *inferencepb.ModelConfig) bool { return c.Backend == "python" }},
		{"tensorflow savedmodel", `platform: "tensorflow_savedmodel"`,
			func(c *inferencepb.ModelConfig) bool {
				return c.Backend == "tensorflow" && c.DefaultModelFilename == "model.savedmodel"
			}},
		{"empty reshape allowed when batching", `backend: "fake" max_batch_size: 2 input [ { name: "IN" data_type: TYPE_FP32 dims: [ 1 ] reshape { } } ]`,
			func(c *inferencepb.ModelConfig) bool { return c.Input[0].Reshape != nil }},
		{"variable reshape runs", `backend: "fake" input [ { name: "IN" data_type: TYPE_FP32 dims: [ 2, 4, -1, 6 ] reshape { shape: [ 8, -1, 1, 6 ] } } ]`,
			func(c *inferencepb.ModelConfig) bool { return true }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := completeText(t, "m", tt.text)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(cfg) {
				t.Errorf("unexpected config:\n%v", prototext.Format(cfg))
			}
		})
	}
}

func TestAutoCompleteFromFiles(t *testing.T) {
	tests := []struct {
		file, backend, platform string
		dir                     bool
		wantFile                string
	}{
		{"model.onnx", "onnxruntime", "onnxruntime_onnx", false, "model.onnx"},
		{"model.onnx", "onnxruntime", "onnxruntime_onnx", true, "model.onnx"},
		{"model.py", "python", "", false, "model.py"},
		{"model.plan", "tensorrt", "tensorrt_plan", false, "model.plan"},
		// Triton leaves default_model_filename empty here; the backend
		// knows its default.
		{"model.pt", "pytorch", "pytorch_libtorch", false, ""},
		{"model.savedmodel", "tensorflow", "tensorflow_savedmodel", true, "model.savedmodel"},
		{"model.graphdef", "tensorflow", "tensorflow_graphdef", false, "model.graphdef"},
		{"model.xml", "openvino", "", false, "model.xml"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			dir := t.TempDir()
			mustMkdir(t, filepath.Join(dir, "1"))
			p := filepath.Join(dir, "1", tt.file)
			if tt.dir {
				mustMkdir(t, p)
			} else {
				mustWrite(t, p, "x")
			}
			cfg := &inferencepb.ModelConfig{}
			if err := autoCompleteBackendFields("m", dir, cfg); err != nil {
				t.Fatal(err)
			}
			if cfg.Name != "m" || cfg.Backend != tt.backend || cfg.Platform != tt.platform || cfg.DefaultModelFilename != tt.wantFile {
				t.Errorf("got name %q backend %q platform %q file %q", cfg.Name, cfg.Backend, cfg.Platform, cfg.DefaultModelFilename)
			}
		})
	}
	t.Run("custom backend from the model name", func(t *testing.T) {
		cfg := &inferencepb.ModelConfig{}
		if err := autoCompleteBackendFields("add.identity", "", cfg); err != nil {
			t.Fatal(err)
		}
		if cfg.Backend != "identity" || cfg.DefaultModelFilename != "model.identity" {
			t.Errorf("got backend %q file %q", cfg.Backend, cfg.DefaultModelFilename)
		}
	})
}

func TestVersionsToLoad(t *testing.T) {
	policy := func(text string) *inferencepb.ModelVersionPolicy {
		p := &inferencepb.ModelVersionPolicy{}
		if err := prototext.Unmarshal([]byte(text), p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		policy        string
		existing      []int64
		load, missing []int64
	}{
		{`latest { num_versions: 1 }`, []int64{1, 2, 10}, []int64{10}, nil},
		{`latest { num_versions: 2 }`, []int64{1, 2, 10}, []int64{2, 10}, nil},
		{`latest { num_versions: 5 }`, []int64{3}, []int64{3}, nil},
		{`latest { num_versions: 0 }`, []int64{3}, []int64{}, nil},
		{`all { }`, []int64{1, 2, 3}, []int64{1, 2, 3}, nil},
		{`all { }`, nil, nil, nil},
		{`specific { versions: [ 3, 1, 7, 1 ] }`, []int64{1, 2, 3}, []int64{1, 3}, []int64{7}},
	}
	for _, tt := range tests {
		load, missing := versionsToLoad(policy(tt.policy), tt.existing)
		if len(load) != len(tt.load) || !slices.Equal(load, tt.load) || !slices.Equal(missing, tt.missing) {
			t.Errorf("%s over %v: load %v missing %v, want %v %v", tt.policy, tt.existing, load, missing, tt.load, tt.missing)
		}
	}
}

func TestVersionDirs(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"1", "2", "10", "01", "abc", ".5", "configs", "-3"} {
		mustMkdir(t, filepath.Join(dir, d))
	}
	mustWrite(t, filepath.Join(dir, "7"), "a file, not a version")
	if err := os.Symlink(filepath.Join(dir, "2"), filepath.Join(dir, "3")); err != nil {
		t.Fatal(err)
	}
	got, err := versionDirs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int64{1, 2, 3, 10}; !slices.Equal(got, want) {
		t.Errorf("versionDirs = %v, want %v", got, want)
	}
}

func TestParseConfigJSON(t *testing.T) {
	// protojson takes 64-bit integers as numbers or strings.
	cfg, err := parseConfigJSON(`{"backend":"fake","input":[{"name":"IN","data_type":"TYPE_FP32","dims":[4,"-1"]}],
		"version_policy":{"specific":{"versions":[1,"2"]}}}`)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Input[0].Dims, []int64{4, -1}) || !slices.Equal(cfg.GetVersionPolicy().GetSpecific().GetVersions(), []int64{1, 2}) {
		t.Errorf("parsed %v", cfg)
	}
	if _, err := parseConfigJSON(`{"no_such_field":1}`); err == nil {
		t.Error("unknown JSON field accepted")
	}
}

func TestConfigPathWithCustomName(t *testing.T) {
	dir := t.TempDir()
	if got := configPath(dir, "h100"); got != filepath.Join(dir, "config.pbtxt") {
		t.Errorf("without configs/h100.pbtxt: %s", got)
	}
	mustMkdir(t, filepath.Join(dir, "configs"))
	mustWrite(t, filepath.Join(dir, "configs", "h100.pbtxt"), "")
	if got := configPath(dir, "h100"); got != filepath.Join(dir, "configs", "h100.pbtxt") {
		t.Errorf("with configs/h100.pbtxt: %s", got)
	}
}

func TestConfigErrorClass(t *testing.T) {
	_, err := completeText(t, "m", `backend: "fake" max_batch_size: -1`)
	if !errors.As(err, new(configError)) {
		t.Errorf("%v is not a configError", err)
	}
}
