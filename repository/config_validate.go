package repository

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nereid-project/nereid/proto/inferencepb"
)

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
