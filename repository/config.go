package repository

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/nereid-project/nereid/proto/inferencepb"
)

// File and platform names with the meaning Triton gives them.
const (
	configFileName   = "config.pbtxt"
	configsFolder    = "configs"
	ensemblePlatform = "ensemble"

	// defaultSequenceIdleMicroseconds is Triton's default for
	// sequence_batching.max_sequence_idle_microseconds.
	defaultSequenceIdleMicroseconds = 1_000_000
	// wildcardDim marks a variable-size dimension.
	wildcardDim = -1
)

// Backends and platforms that Triton's core fills in for itself, before a
// backend sees the configuration (AutoCompleteBackendFields).
const (
	backendTensorFlow  = "tensorflow"
	backendTensorRT    = "tensorrt"
	backendONNXRuntime = "onnxruntime"
	backendOpenVINO    = "openvino"
	backendPyTorch     = "pytorch"
	backendPython      = "python"

	platformTFSavedModel = "tensorflow_savedmodel"
	platformTFGraphDef   = "tensorflow_graphdef"
	platformTensorRT     = "tensorrt_plan"
	platformONNX         = "onnxruntime_onnx"
	platformLibTorch     = "pytorch_libtorch"

	fileTFSavedModel = "model.savedmodel"
	fileTFGraphDef   = "model.graphdef"
	fileTensorRT     = "model.plan"
	fileONNX         = "model.onnx"
	fileOpenVINO     = "model.xml"
	fileLibTorch     = "model.pt"
	filePython       = "model.py"
)

// knownBackendPlatforms lists, for the backends whose platform Triton
// checks, the platforms that may accompany them.
var knownBackendPlatforms = map[string][]string{
	backendTensorFlow:  {platformTFSavedModel, platformTFGraphDef},
	backendTensorRT:    {platformTensorRT},
	backendONNXRuntime: {platformONNX},
	backendPyTorch:     {platformLibTorch},
}

// tritonErrorf builds an error whose text is Triton's own, capitals and
// full stops included: clients and scripts match these texts.
func tritonErrorf(format string, args ...any) error {
	return fmt.Errorf(format, args...)
}

// parseConfigText parses config.pbtxt bytes. src names the file in errors.
func parseConfigText(src string, data []byte) (*inferencepb.ModelConfig, error) {
	cfg := &inferencepb.ModelConfig{}
	if err := prototext.Unmarshal(data, cfg); err != nil {
		return nil, fmt.Errorf("%s: failed to parse model configuration: %w", src, err)
	}
	return cfg, nil
}

// parseConfigJSON parses a configuration given as JSON in a load request.
// protojson accepts 64-bit integers both as JSON numbers and as strings.
func parseConfigJSON(data string) (*inferencepb.ModelConfig, error) {
	cfg := &inferencepb.ModelConfig{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal([]byte(data), cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// configPath returns the configuration file a model directory uses: with a
// --model-config-name, configs/<name>.pbtxt when it exists, else
// config.pbtxt.
func configPath(modelDir, customName string) string {
	if customName != "" {
		p := filepath.Join(modelDir, configsFolder, customName+".pbtxt")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	return filepath.Join(modelDir, configFileName)
}

// autoCompleteBackendFields fills what Triton's core fills whatever the
// auto-complete setting: the model name, and the backend, platform and
// default_model_filename implied by one another or by the files of the
// first version directory. modelDir may be empty (no files to inspect).
func autoCompleteBackendFields(name, modelDir string, cfg *inferencepb.ModelConfig) error {
	if cfg.GetName() == "" {
		cfg.Name = name
	}

	// Triton inspects the first subdirectory (in name order) only.
	var content map[string]bool // name → is a directory
	if modelDir != "" {
		if subdirs := subdirectories(modelDir); len(subdirs) > 0 {
			content = dirContent(filepath.Join(modelDir, subdirs[0]))
		}
	}
	hasVersion := content != nil
	has := func(file string, wantDir bool) bool {
		isDir, ok := content[file]
		return ok && isDir == wantDir
	}
	noHints := func() bool {
		return cfg.GetPlatform() == "" && cfg.GetDefaultModelFilename() == "" && hasVersion
	}

	// TensorFlow: the platform is what matters.
	if cfg.GetPlatform() == "" && (cfg.GetBackend() == "" || cfg.GetBackend() == backendTensorFlow) {
		switch {
		case cfg.GetDefaultModelFilename() == fileTFSavedModel:
			cfg.Platform = platformTFSavedModel
		case cfg.GetDefaultModelFilename() == fileTFGraphDef:
			cfg.Platform = platformTFGraphDef
		case cfg.GetDefaultModelFilename() == "" && hasVersion:
			if has(fileTFSavedModel, true) {
				cfg.Platform = platformTFSavedModel
			}
			if has(fileTFGraphDef, false) {
				cfg.Platform = platformTFGraphDef
			}
		}
	}
	if cfg.Platform == platformTFSavedModel || cfg.Platform == platformTFGraphDef {
		if cfg.Backend == "" {
			cfg.Backend = backendTensorFlow
		}
		if cfg.DefaultModelFilename == "" {
			if cfg.Platform == platformTFSavedModel {
				cfg.DefaultModelFilename = fileTFSavedModel
			} else {
				cfg.DefaultModelFilename = fileTFGraphDef
			}
		}
		return nil
	}

	// TensorRT.
	if cfg.Backend == "" {
		if cfg.Platform == platformTensorRT || cfg.DefaultModelFilename == fileTensorRT ||
			(noHints() && has(fileTensorRT, false)) {
			cfg.Backend = backendTensorRT
		}
	}
	if cfg.Backend == backendTensorRT {
		if cfg.Platform == "" {
			cfg.Platform = platformTensorRT
		}
		if cfg.DefaultModelFilename == "" {
			cfg.DefaultModelFilename = fileTensorRT
		}
		return nil
	}

	// ONNX Runtime: the model may be a file or a directory.
	if cfg.Backend == "" {
		_, onnx := content[fileONNX]
		if cfg.Platform == platformONNX || cfg.DefaultModelFilename == fileONNX || (noHints() && onnx) {
			cfg.Backend = backendONNXRuntime
		}
	}
	if cfg.Backend == backendONNXRuntime {
		if cfg.Platform == "" {
			cfg.Platform = platformONNX
		}
		if cfg.DefaultModelFilename == "" {
			cfg.DefaultModelFilename = fileONNX
		}
		return nil
	}

	// OpenVINO.
	if cfg.Backend == "" {
		_, xml := content[fileOpenVINO]
		if cfg.DefaultModelFilename == fileOpenVINO || (noHints() && xml) {
			cfg.Backend = backendOpenVINO
		}
	}
	if cfg.Backend == backendOpenVINO {
		if cfg.DefaultModelFilename == "" {
			cfg.DefaultModelFilename = fileOpenVINO
		}
		return nil
	}

	// PyTorch (LibTorch).
	if cfg.Backend == "" {
		if cfg.Platform == platformLibTorch || cfg.DefaultModelFilename == fileLibTorch {
			cfg.Backend = backendPyTorch
		} else if noHints() && has(fileLibTorch, false) {
			cfg.Backend = backendPyTorch
			cfg.Platform = platformLibTorch
		}
	}
	if cfg.Backend == backendPyTorch {
		if cfg.Platform == "" {
			cfg.Platform = platformLibTorch
			if cfg.DefaultModelFilename == "" {
				cfg.DefaultModelFilename = fileLibTorch
			}
		}
		return nil
	}

	// Python.
	if cfg.Backend == "" {
		_, py := content[filePython]
		if cfg.DefaultModelFilename == filePython || (noHints() && py) {
			cfg.Backend = backendPython
		}
	}
	if cfg.Backend == backendPython {
		if cfg.DefaultModelFilename == "" {
			cfg.DefaultModelFilename = filePython
		}
		return nil
	}

	// A custom backend named by the model: "model.<backend>".
	if cfg.Backend == "" && cfg.Platform == "" && cfg.DefaultModelFilename == "" {
		i := strings.IndexByte(name, '.')
		if i < 0 {
			return tritonErrorf("Invalid model name: Could not determine backend for model '%s' "+
				"with no backend in model configuration. Expected model name of the form "+
				"'model.<backend_name>'.", name)
		}
		b := name[i+1:]
		cfg.Backend = b
		cfg.DefaultModelFilename = "model." + b
	}
	return nil
}

// normalizeConfig fills the defaults Triton's core adds before validation
// (NormalizeModelConfig): version policy, preferred batch sizes, the
// sequence idle time and pinned memory.
func normalizeConfig(cfg *inferencepb.ModelConfig) {
	if cfg.VersionPolicy == nil || cfg.VersionPolicy.PolicyChoice == nil {
		cfg.VersionPolicy = &inferencepb.ModelVersionPolicy{
			PolicyChoice: &inferencepb.ModelVersionPolicy_Latest_{
				Latest: &inferencepb.ModelVersionPolicy_Latest{NumVersions: 1},
			},
		}
	}
	if db := cfg.GetDynamicBatching(); db != nil {
		if len(db.PreferredBatchSize) == 0 && cfg.MaxBatchSize > 0 {
			db.PreferredBatchSize = []int32{cfg.MaxBatchSize}
		}
	}
	if sb := cfg.GetSequenceBatching(); sb != nil {
		if sb.MaxSequenceIdleMicroseconds == 0 {
			sb.MaxSequenceIdleMicroseconds = defaultSequenceIdleMicroseconds
		}
		if o := sb.GetOldest(); o != nil && len(o.PreferredBatchSize) == 0 && cfg.MaxBatchSize > 0 {
			o.PreferredBatchSize = []int32{cfg.MaxBatchSize}
		}
	}
	if cfg.GetEnsembleScheduling() == nil {
		if cfg.Optimization == nil {
			cfg.Optimization = &inferencepb.ModelOptimizationPolicy{}
		}
		if cfg.Optimization.InputPinnedMemory == nil {
			cfg.Optimization.InputPinnedMemory = &inferencepb.ModelOptimizationPolicy_PinnedMemoryBuffer{Enable: true}
		}
		if cfg.Optimization.OutputPinnedMemory == nil {
			cfg.Optimization.OutputPinnedMemory = &inferencepb.ModelOptimizationPolicy_PinnedMemoryBuffer{Enable: true}
		}
	}
}

// normalizeInstanceGroups gives a non-ensemble model at least one instance
// group and names, kinds and counts its groups as Triton does
// (NormalizeInstanceGroup). KIND_AUTO resolves to KIND_CPU (Nereid's
// backends run on the CPU unless a group asks for a GPU), and a KIND_GPU
// group that names no GPU gets every GPU the machine has.
func normalizeInstanceGroups(cfg *inferencepb.ModelConfig, gpus func() []int32) {
	if cfg.GetEnsembleScheduling() != nil {
		return
	}
	if len(cfg.InstanceGroup) == 0 {
		cfg.InstanceGroup = []*inferencepb.ModelInstanceGroup{{Name: cfg.Name}}
	}
	for i, g := range cfg.InstanceGroup {
		if g.Name == "" {
			g.Name = cfg.Name + "_" + strconv.Itoa(i)
		}
		if g.Kind == inferencepb.ModelInstanceGroup_KIND_AUTO {
			g.Kind = inferencepb.ModelInstanceGroup_KIND_CPU
		}
		if g.Kind == inferencepb.ModelInstanceGroup_KIND_GPU && len(g.Gpus) == 0 {
			g.Gpus = slices.Clone(gpus())
		}
		if g.Count < 1 {
			g.Count = 1
			// Triton opts these backends into two CPU instances by default.
			if g.Kind == inferencepb.ModelInstanceGroup_KIND_CPU &&
				(cfg.Backend == backendTensorFlow || cfg.Backend == backendONNXRuntime) {
				g.Count = 2
			}
		}
	}
}

// validateModelConfig checks the rules Triton's core applies to every
// configuration before a backend sees it (ValidateModelConfig). The texts
// are Triton's.
func validateModelConfig(cfg *inferencepb.ModelConfig) error {
	name := cfg.GetName()
	if name == "" {
		return errors.New("model configuration must specify 'name'")
	}
	switch {
	case cfg.Backend == "" && cfg.Platform != ensemblePlatform:
		return fmt.Errorf("unexpected platform type '%s' for %s", cfg.Platform, name)
	case cfg.Backend != "" && cfg.Platform == ensemblePlatform:
		return tritonErrorf("Ensemble model '%s' must have platform type '%s' and empty backend type", name, cfg.Platform)
	}
	if platforms, ok := knownBackendPlatforms[cfg.Backend]; ok && !slices.Contains(platforms, cfg.Platform) {
		return fmt.Errorf("unexpected 'platform' and 'backend' pair, got:%s, %s", cfg.Platform, cfg.Backend)
	}
	if cfg.MaxBatchSize < 0 {
		return fmt.Errorf("'max_batch_size' must be non-negative value for %s", name)
	}
	if cfg.VersionPolicy == nil || cfg.VersionPolicy.PolicyChoice == nil {
		return fmt.Errorf("must specify 'version policy' for %s", name)
	}
	if err := validateDynamicBatching(cfg); err != nil {
		return err
	}
	if err := validateSequenceBatching(cfg); err != nil {
		return err
	}
	if cfg.GetEnsembleScheduling() != nil {
		if err := validateEnsembleScheduling(cfg); err != nil {
			return err
		}
	} else if cfg.Platform == ensemblePlatform {
		return fmt.Errorf("ensemble scheduling must be set for ensemble %s whose platform is %s", name, ensemblePlatform)
	}
	if cfg.GetModelTransactionPolicy().GetDecoupled() && cfg.GetResponseCache().GetEnable() {
		return tritonErrorf("Response Cache does not currently support model %s with 'decoupled' "+
			"transaction policy. Please disable the response cache.", name)
	}
	for _, mc := range cfg.GetModelMetrics().GetMetricControl() {
		switch {
		case mc.GetMetricIdentifier() == nil:
			return errors.New("metric control must specify 'metric_identifier'")
		case mc.GetMetricIdentifier().GetFamily() == "":
			return errors.New("metric identifier must specify non-empty 'family'")
		case mc.GetHistogramOptions() == nil:
			return errors.New("metric control must specify 'histogram_options'")
		case len(mc.GetHistogramOptions().GetBuckets()) == 0:
			return errors.New("histogram options must specify non-empty 'buckets'")
		case mc.GetMetricIdentifier().GetFamily() != firstResponseHistogram:
			return fmt.Errorf("model_metrics of model '%s': metric family '%s' has no histogram; the one histogram family is '%s'",
				name, mc.GetMetricIdentifier().GetFamily(), firstResponseHistogram)
		}
		b := mc.GetHistogramOptions().GetBuckets()
		for i := 1; i < len(b); i++ {
			if !(b[i] > b[i-1]) {
				return fmt.Errorf("model_metrics of model '%s': the buckets of '%s' must increase, but %v follows %v",
					name, firstResponseHistogram, b[i], b[i-1])
			}
		}
	}
	return nil
}

// firstResponseHistogram is the metric family model_metrics may give
// buckets to (the metrics package's FirstResponseHistogram).
const firstResponseHistogram = "nv_inference_first_response_histogram_ms"

func validateDynamicBatching(cfg *inferencepb.ModelConfig) error {
	db := cfg.GetDynamicBatching()
	if db == nil {
		return nil
	}
	name := cfg.Name
	for _, size := range db.PreferredBatchSize {
		if size <= 0 {
			return fmt.Errorf("dynamic batching preferred size must be positive for %s", name)
		}
		if size > cfg.MaxBatchSize {
			return fmt.Errorf("dynamic batching preferred size must be <= max batch size for %s", name)
		}
	}
	if levels := db.PriorityLevels; levels != 0 {
		if db.DefaultPriorityLevel == 0 || db.DefaultPriorityLevel > levels {
			return fmt.Errorf("default priority level must be in range [1, %d] for %s", levels, name)
		}
		for level := range db.PriorityQueuePolicy {
			if level == 0 || level > levels {
				return fmt.Errorf("priority queue policy must have priority level in range [1, %d] for %s", levels, name)
			}
		}
	}
	if db.PreserveOrdering {
		if db.PriorityLevels > 1 {
			return tritonErrorf("Only one priority level is allowed when 'preserve_ordering' is true for %s", name)
		}
		delays := func(p *inferencepb.ModelQueuePolicy) bool {
			return p.GetDefaultTimeoutMicroseconds() != 0 && p.GetTimeoutAction() == inferencepb.ModelQueuePolicy_DELAY
		}
		bad := delays(db.DefaultQueuePolicy)
		for _, p := range db.PriorityQueuePolicy {
			bad = bad || delays(p)
		}
		if bad {
			return tritonErrorf("Queue policy can not have DELAY as timeout action when 'preserve_ordering' is true for %s", name)
		}
	}
	return nil
}

func validateSequenceBatching(cfg *inferencepb.ModelConfig) error {
	sb := cfg.GetSequenceBatching()
	if sb == nil {
		return nil
	}
	name := cfg.Name
	if cfg.GetResponseCache().GetEnable() {
		return tritonErrorf("Response Cache does not currently support model %s with sequence batching "+
			"scheduler. Please disable the response cache.", name)
	}
	for _, kind := range []inferencepb.ModelSequenceBatching_Control_Kind{
		inferencepb.ModelSequenceBatching_Control_CONTROL_SEQUENCE_START,
		inferencepb.ModelSequenceBatching_Control_CONTROL_SEQUENCE_END,
		inferencepb.ModelSequenceBatching_Control_CONTROL_SEQUENCE_READY,
		inferencepb.ModelSequenceBatching_Control_CONTROL_SEQUENCE_CORRID,
	} {
		if err := validateSequenceControl(sb, name, kind); err != nil {
			return err
		}
	}
	if o := sb.GetOldest(); o != nil {
		for _, size := range o.PreferredBatchSize {
			if size <= 0 {
				return fmt.Errorf("sequence batching preferred batch size must be positive for %s", name)
			}
			if size > cfg.MaxBatchSize {
				return fmt.Errorf("sequence batching preferred batch size must be <= max batch size for %s", name)
			}
		}
	}
	if d := sb.GetDirect(); d != nil {
		if u := d.MinimumSlotUtilization; u < 0 || u > 1 {
			return fmt.Errorf("sequence batching minimum slot utilization must be in range (0.0, 1.0] for %s", name)
		}
	}
	return nil
}

// validateSequenceControl checks the control tensors of one kind: START,
// END and READY carry exactly one of the *_false_true pairs, CORRID none
// and an integer or string data type.
func validateSequenceControl(sb *inferencepb.ModelSequenceBatching, name string, kind inferencepb.ModelSequenceBatching_Control_Kind) error {
	seenTensors := map[string]bool{}
	seen := false
	for _, ci := range sb.ControlInput {
		if ci.GetName() == "" {
			return fmt.Errorf("sequence batching control tensor must have a name for %s", name)
		}
		if seenTensors[ci.Name] {
			return fmt.Errorf("sequence batching control tensor '%s' is specified for multiple control kinds for %s", ci.Name, name)
		}
		seenTensors[ci.Name] = true
		for _, c := range ci.Control {
			if c.GetKind() != kind {
				continue
			}
			if seen {
				return fmt.Errorf("sequence batching specifies multiple %s tensors for %s", kind, name)
			}
			seen = true
			n32, nf, nb := len(c.Int32FalseTrue), len(c.Fp32FalseTrue), len(c.BoolFalseTrue)
			if kind == inferencepb.ModelSequenceBatching_Control_CONTROL_SEQUENCE_CORRID {
				if n32+nf+nb > 0 {
					return fmt.Errorf("sequence batching must not specify either 'int32_false_true', "+
						"'fp32_false_true' or 'bool_false_true' for %s for %s", kind, name)
				}
				switch c.DataType {
				case inferencepb.DataType_TYPE_UINT64, inferencepb.DataType_TYPE_INT64,
					inferencepb.DataType_TYPE_UINT32, inferencepb.DataType_TYPE_INT32,
					inferencepb.DataType_TYPE_STRING:
				default:
					return fmt.Errorf("unexpected data type for control %s for %s. Allowed data types are "+
						"TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32 and TYPE_STRING", kind, name)
				}
				continue
			}
			set := 0
			for _, n := range []int{n32, nf, nb} {
				if n != 0 {
					set++
				}
			}
			switch {
			case set == 0:
				return fmt.Errorf("sequence batching must specify either 'int32_false_true', "+
					"'fp32_false_true' or 'bool_false_true' for %s for %s", kind, name)
			case set > 1:
				return fmt.Errorf("sequence batching specifies more than one from 'int32_false_true', "+
					"'fp32_false_true' and 'bool_false_true' for %s for %s", kind, name)
			case n32 != 0 && n32 != 2:
				return fmt.Errorf("sequence batching control 'int32_false_true' must have exactly 2 entries for %s for %s", kind, name)
			case nf != 0 && nf != 2:
				return fmt.Errorf("sequence batching control 'fp32_false_true' must have exactly 2 entries for %s for %s", kind, name)
			case nb != 0 && nb != 2:
				return fmt.Errorf("sequence batching control 'bool_false_true' must have exactly 2 entries for %s for %s", kind, name)
			}
		}
	}
	return nil
}

// validateEnsembleScheduling checks the shape of ensemble_scheduling; the
// data flow between steps is the ensemble scheduler's to check.
func validateEnsembleScheduling(cfg *inferencepb.ModelConfig) error {
	name := cfg.Name
	if cfg.Platform != ensemblePlatform {
		return fmt.Errorf("ensemble scheduling cannot be set for model '%s' whose platform is not %s", name, ensemblePlatform)
	}
	if len(cfg.InstanceGroup) != 0 {
		return fmt.Errorf("instance group should not be specified for ensemble '%s'", name)
	}
	if cfg.Optimization != nil {
		return fmt.Errorf("optimization should not be specified for ensemble '%s'", name)
	}
	if len(cfg.ModelWarmup) != 0 {
		return fmt.Errorf("model_warmup can not be specified for ensemble '%s'", name)
	}
	steps := cfg.GetEnsembleScheduling().GetStep()
	if len(steps) == 0 {
		return fmt.Errorf("must specify 'step' for ensemble '%s'", name)
	}
	for i, s := range steps {
		switch {
		case s.GetModelName() == "":
			return fmt.Errorf("must specify 'model_name' in step %d of ensemble '%s'", i, name)
		case len(s.InputMap) == 0:
			return fmt.Errorf("must specify 'input_map' in step %d of ensemble '%s'", i, name)
		case len(s.OutputMap) == 0:
			return fmt.Errorf("must specify 'output_map' in step %d of ensemble '%s'", i, name)
		}
	}
	// A tensor in two steps' output maps is the ensemble package's to
	// judge: it allows that on exclusive branches of a route step.
	return nil
}

// validateIOConfig checks inputs, outputs and batch inputs / outputs
// (ValidateModelIOConfig), with Triton's texts.
func validateIOConfig(cfg *inferencepb.ModelConfig) error {
	inputs := map[string]bool{}
	for _, in := range cfg.Input {
		if err := validateIOShape("model input ", in.GetName(), in.GetDataType(), in.GetDims(), in.GetReshape(), cfg.MaxBatchSize); err != nil {
			return fmt.Errorf("%w for %s", err, cfg.Name)
		}
		if inputs[in.Name] {
			return fmt.Errorf("model input '%s' is specified more than once for %s", in.Name, cfg.Name)
		}
		inputs[in.Name] = true
		if (in.Format == inferencepb.ModelInput_FORMAT_NHWC || in.Format == inferencepb.ModelInput_FORMAT_NCHW) && len(in.Dims) != 3 {
			return fmt.Errorf("model input NHWC/NCHW require 3 dims for %s", cfg.Name)
		}
		if err := validateTensorRTOnly(cfg, in.IsShapeTensor, in.IsNonLinearFormatIo, len(in.Dims), "input"); err != nil {
			return fmt.Errorf("%w for %s", err, cfg.Name)
		}
	}
	outputs := map[string]bool{}
	for _, out := range cfg.Output {
		if err := validateIOShape("model output ", out.GetName(), out.GetDataType(), out.GetDims(), out.GetReshape(), cfg.MaxBatchSize); err != nil {
			return fmt.Errorf("%w for %s", err, cfg.Name)
		}
		if outputs[out.Name] {
			return fmt.Errorf("model output '%s' is specified more than once for %s", out.Name, cfg.Name)
		}
		outputs[out.Name] = true
		if err := validateTensorRTOnly(cfg, out.IsShapeTensor, out.IsNonLinearFormatIo, len(out.Dims), "output"); err != nil {
			return fmt.Errorf("%w for %s", err, cfg.Name)
		}
	}
	if err := validateBatchIO(cfg, inputs, outputs); err != nil {
		return fmt.Errorf("%w for %s", err, cfg.Name)
	}
	return nil
}

func validateTensorRTOnly(cfg *inferencepb.ModelConfig, shapeTensor, nonLinear bool, dims int, io string) error {
	if shapeTensor && cfg.Platform != platformTensorRT {
		return errors.New("shape tensors are only supported for TensorRT platform")
	}
	if nonLinear {
		if cfg.Platform != platformTensorRT {
			return tritonErrorf("Non-linear IO format is only supported for the TensorRT platform")
		}
		if dims != 3 {
			return tritonErrorf("Non-linear IO format %s requires 3 dims", io)
		}
	}
	return nil
}

// validateIOShape is Triton's ValidateIOShape plus a check that the data
// type is one the protocol knows.
func validateIOShape(prefix, name string, dt inferencepb.DataType, dims []int64, reshape *inferencepb.ModelTensorReshape, maxBatch int32) error {
	if name == "" {
		return fmt.Errorf("%smust specify 'name'", prefix)
	}
	prefix += "'" + name + "' "
	if dt == inferencepb.DataType_TYPE_INVALID {
		return fmt.Errorf("%smust specify 'data_type'", prefix)
	}
	if _, ok := inferencepb.DataType_name[int32(dt)]; !ok {
		return fmt.Errorf("%shas unknown 'data_type' %d", prefix, int32(dt))
	}
	if len(dims) == 0 {
		return fmt.Errorf("%smust specify 'dims'", prefix)
	}
	if reshape != nil && len(reshape.Shape) == 0 && maxBatch == 0 {
		return fmt.Errorf("%scannot have empty reshape for non-batching model as scalar tensors are not supported", prefix)
	}
	for _, d := range dims {
		if d < 1 && d != wildcardDim {
			return fmt.Errorf("%sdimension must be integer >= 1, or %d to indicate a variable-size dimension", prefix, wildcardDim)
		}
	}
	if reshape == nil {
		return nil
	}
	for _, d := range reshape.Shape {
		if d < 1 && d != wildcardDim {
			return fmt.Errorf("%sreshape dimensions must be integer >= 1, or %d to indicate a variable-size dimension", prefix, wildcardDim)
		}
	}
	// dims and reshape must hold the same number of elements; between
	// variable-size dimensions, each run of fixed dimensions must match.
	dimRuns, reshapeRuns := elementRuns(dims), elementRuns(reshape.Shape)
	if len(reshape.Shape) == 0 {
		if len(dimRuns) != 1 || dimRuns[0] != 1 {
			return fmt.Errorf("%shas different size for dims and reshape", prefix)
		}
		return nil
	}
	if len(dimRuns) != len(reshapeRuns) {
		if len(dimRuns) == 1 || len(reshapeRuns) == 1 {
			return fmt.Errorf("%shas different size for dims and reshape", prefix)
		}
		return fmt.Errorf("%shas different number of variable-size dimensions for dims and reshape", prefix)
	}
	for i := range dimRuns {
		if dimRuns[i] != reshapeRuns[i] {
			return fmt.Errorf("%shas different size for dims and reshape", prefix)
		}
	}
	return nil
}

// elementRuns splits a shape at its variable-size dimensions and returns
// the element count of each run of fixed dimensions (-1 on overflow).
func elementRuns(shape []int64) []int64 {
	runs := []int64{1}
	for _, d := range shape {
		if d == wildcardDim {
			runs = append(runs, 1)
			continue
		}
		last := &runs[len(runs)-1]
		if *last < 0 || d <= 0 || *last > (1<<62)/d {
			*last = -1
			continue
		}
		*last *= d
	}
	return runs
}

func validateBatchIO(cfg *inferencepb.ModelConfig, inputs, outputs map[string]bool) error {
	for _, bi := range cfg.BatchInput {
		switch bi.Kind {
		case inferencepb.BatchInput_BATCH_ELEMENT_COUNT,
			inferencepb.BatchInput_BATCH_ACCUMULATED_ELEMENT_COUNT,
			inferencepb.BatchInput_BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO,
			inferencepb.BatchInput_BATCH_MAX_ELEMENT_COUNT_AS_SHAPE,
			inferencepb.BatchInput_BATCH_ITEM_SHAPE,
			inferencepb.BatchInput_BATCH_ITEM_SHAPE_FLATTEN:
			if len(bi.SourceInput) != 1 {
				return fmt.Errorf("batch input kind '%s' expects 1 source input, got %d", bi.Kind, len(bi.SourceInput))
			}
		default:
			return fmt.Errorf("unknown batch input kind '%s'", bi.Kind)
		}
		if bi.DataType != inferencepb.DataType_TYPE_INT32 && bi.DataType != inferencepb.DataType_TYPE_FP32 {
			return errors.New("batch input data type must be TYPE_INT32 or TYPE_FP32")
		}
		for _, src := range bi.SourceInput {
			if !inputs[src] {
				return fmt.Errorf("unknown source input name '%s'", src)
			}
		}
	}
	for _, bo := range cfg.BatchOutput {
		if bo.Kind != inferencepb.BatchOutput_BATCH_SCATTER_WITH_INPUT_SHAPE {
			return fmt.Errorf("unknown batch output kind '%s'", bo.Kind)
		}
		if len(bo.SourceInput) != 1 {
			return fmt.Errorf("batch output kind '%s' expects 1 source input, got %d", bo.Kind, len(bo.SourceInput))
		}
		for _, src := range bo.SourceInput {
			if !inputs[src] {
				return fmt.Errorf("unknown source input name '%s'", src)
			}
		}
		targets := map[string]bool{}
		for _, t := range bo.TargetName {
			if !outputs[t] {
				return fmt.Errorf("unknown target output name '%s'", t)
			}
			if targets[t] {
				return fmt.Errorf("target output name '%s' can only be specified once", t)
			}
			targets[t] = true
		}
	}
	return nil
}

// validateInstanceGroups checks the groups after normalization
// (ValidateInstanceGroup): a KIND_GPU group must name GPUs the machine has
// (gpus, the device ordinals found at start), for every backend. Whether
// the backend can run on them is the loader's to decide.
func validateInstanceGroups(cfg *inferencepb.ModelConfig, gpus func() []int32) error {
	if cfg.GetEnsembleScheduling() != nil {
		return nil
	}
	if len(cfg.InstanceGroup) == 0 {
		return fmt.Errorf("must specify one or more 'instance group's for %s", cfg.Name)
	}
	for _, g := range cfg.InstanceGroup {
		switch g.Kind {
		case inferencepb.ModelInstanceGroup_KIND_MODEL:
			if len(g.Gpus) > 0 {
				return fmt.Errorf("instance group %s of model %s has kind KIND_MODEL but specifies one or more GPUs", g.Name, cfg.Name)
			}
		case inferencepb.ModelInstanceGroup_KIND_CPU:
			if len(g.Gpus) > 0 {
				return fmt.Errorf("instance group %s of model %s has kind KIND_CPU but specifies one or more GPUs", g.Name, cfg.Name)
			}
		case inferencepb.ModelInstanceGroup_KIND_GPU:
			if len(g.Gpus) == 0 {
				return tritonErrorf("instance group %s of model %s has kind KIND_GPU but no GPUs are available", g.Name, cfg.Name)
			}
			for _, id := range g.Gpus {
				if !slices.Contains(gpus(), id) {
					return tritonErrorf("instance group %s of model %s specifies invalid or unsupported gpu id %d. "+
						"GPUs with at least the minimum required CUDA compute compatibility of %s are: %s",
						g.Name, cfg.Name, id, minComputeCapability, gpuList(gpus()))
				}
			}
		default:
			return fmt.Errorf("instance group %s of model %s has unexpected kind %s", g.Name, cfg.Name, g.Kind)
		}
		if len(g.Profile) > 0 {
			if cfg.Platform != platformTensorRT {
				return fmt.Errorf("instance group %s of model %s and platform %sspecifies profile field which is only supported for TensorRT models",
					g.Name, cfg.Name, cfg.Platform)
			}
			for _, p := range g.Profile {
				if n, err := strconv.Atoi(p); err != nil || n < 0 {
					return tritonErrorf("instance group %s of model %s and platform %s specifies invalid profile %s. "+
						"The field should contain the string representation of a non-negative integer.",
						g.Name, cfg.Name, cfg.Platform, p)
				}
			}
		}
	}
	return nil
}

// minComputeCapability is the CUDA compute capability Triton requires of a
// GPU by default, as its messages print it.
const minComputeCapability = "6.000000"

// gpuList prints device ordinals as Triton's messages do: "0 1 ".
func gpuList(gpus []int32) string {
	var b strings.Builder
	for _, id := range gpus {
		b.WriteString(strconv.Itoa(int(id)))
		b.WriteByte(' ')
	}
	return b.String()
}

// completeConfig turns a parsed configuration into the validated,
// defaults-filled one a loader receives. complete, when non-nil, is the
// loader's auto-complete; it runs on a copy, after the generic checks and
// before the checks of completeness. gpus returns the machine's GPU
// ordinals; it is called only for a KIND_GPU group.
// A configuration error is returned as configError, an error from
// complete as itself.
func completeConfig(name, modelDir string, cfg *inferencepb.ModelConfig, gpus func() []int32, complete func(*inferencepb.ModelConfig) error) (*inferencepb.ModelConfig, error) {
	if err := autoCompleteBackendFields(name, modelDir, cfg); err != nil {
		return nil, configError{err}
	}
	if cfg.Name != name {
		return nil, configError{fmt.Errorf("unexpected directory name '%s' for model '%s', directory name must equal model name", name, cfg.Name)}
	}
	normalizeConfig(cfg)
	if err := validateModelConfig(cfg); err != nil {
		return nil, configError{err}
	}
	if complete != nil {
		c := proto.Clone(cfg).(*inferencepb.ModelConfig)
		if err := complete(c); err != nil {
			return nil, err
		}
		cfg = c
		if cfg.Name != name {
			return nil, configError{fmt.Errorf("unexpected directory name '%s' for model '%s', directory name must equal model name", name, cfg.Name)}
		}
		normalizeConfig(cfg)
		if err := validateModelConfig(cfg); err != nil {
			return nil, configError{err}
		}
	}
	normalizeInstanceGroups(cfg, gpus)
	if err := validateIOConfig(cfg); err != nil {
		return nil, configError{err}
	}
	if err := validateInstanceGroups(cfg, gpus); err != nil {
		return nil, configError{err}
	}
	return cfg, nil
}

// configError marks a problem with the configuration itself, as opposed to
// one the loader reported.
type configError struct{ err error }

func (e configError) Error() string { return e.err.Error() }

func (e configError) Unwrap() error { return e.err }

// versionsToLoad applies a version policy to the version directories that
// exist (ascending). It returns the versions to load, ascending, and the
// versions a specific policy names that have no directory.
func versionsToLoad(policy *inferencepb.ModelVersionPolicy, existing []int64) (load, missing []int64) {
	switch {
	case policy.GetSpecific() != nil:
		for _, v := range policy.GetSpecific().GetVersions() {
			if slices.Contains(load, v) || slices.Contains(missing, v) {
				continue
			}
			if slices.Contains(existing, v) {
				load = append(load, v)
			} else {
				missing = append(missing, v)
			}
		}
		slices.Sort(load)
	case policy.GetAll() != nil:
		load = slices.Clone(existing)
	default:
		n := int(policy.GetLatest().GetNumVersions())
		if n > len(existing) {
			n = len(existing)
		}
		load = slices.Clone(existing[len(existing)-n:])
	}
	return load, missing
}

// parseConfigForFuzz is the whole configuration path without a file
// system or loader: parse, fill, validate. It must never panic.
func parseConfigForFuzz(data []byte) (*inferencepb.ModelConfig, error) {
	cfg, err := parseConfigText("config.pbtxt", data)
	if err != nil {
		return nil, err
	}
	name := cfg.GetName()
	if name == "" {
		name = "fuzz.model"
	}
	cfg, err = completeConfig(name, "", cfg, func() []int32 { return []int32{0, 1} }, nil)
	if err != nil {
		return nil, err
	}
	versionsToLoad(cfg.VersionPolicy, []int64{1, 2, 3})
	return cfg, nil
}
