package server

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/scheduler"
)

// initialStateDir is where config.pbtxt's initial_state data_file names
// live, next to config.pbtxt (Triton's kInitialStateFolder).
const initialStateDir = "initial_state"

// checkSequence applies the sequence extension's request rules the core
// owns: the start and end flags need a sequence ID, and only a model with
// a sequence batcher (or an ensemble, which passes the ID to its steps)
// takes one. The sequence batcher checks the rest.
func (lm *loadedModel) checkSequence(req *inference.Request) error {
	id, start, end := scheduler.SequenceParams(req.Parameters)
	if id.IsZero() {
		if start || end {
			flag := "sequence_start"
			if !start {
				flag = "sequence_end"
			}
			return inference.InvalidArg("inference request to model '%s' sets '%s' without a sequence ID: 'sequence_start' and 'sequence_end' need a non-zero or non-empty 'sequence_id'", lm.name, flag)
		}
		return nil
	}
	if lm.cfg.GetSequenceBatching() == nil && lm.cfg.GetEnsembleScheduling() == nil {
		return inference.InvalidArg("inference request to model '%s' has sequence ID %s, but the model has no sequence batcher: 'sequence_id' is only for models with sequence_batching", lm.name, id)
	}
	return nil
}

// injectedInputs names the inputs the sequence batcher supplies, control
// and state inputs: clients do not send them, even when the configuration
// also lists them as inputs.
func injectedInputs(cfg *inferencepb.ModelConfig) map[string]bool {
	sb := cfg.GetSequenceBatching()
	if sb == nil {
		return nil
	}
	out := map[string]bool{}
	for _, ci := range sb.GetControlInput() {
		out[ci.GetName()] = true
	}
	for _, st := range sb.GetState() {
		out[st.GetInputName()] = true
	}
	return out
}

// sequenceOptions translates sequence_batching into the batcher's options.
// Errors name the field and are load failures.
func sequenceOptions(cfg *inferencepb.ModelConfig, modelDir string, logger zerolog.Logger) (scheduler.SequenceOptions, error) {
	sb := cfg.GetSequenceBatching()
	if sb.GetIterativeSequence() {
		return scheduler.SequenceOptions{}, inference.Unsupported("sequence_batching iterative_sequence is not supported by Nereid yet (model '%s')", cfg.GetName())
	}
	opts := scheduler.SequenceOptions{
		MaxBatchSize:    int(cfg.GetMaxBatchSize()),
		MaxSequenceIdle: time.Duration(sb.GetMaxSequenceIdleMicroseconds()) * time.Microsecond,
		ModelOutputs:    map[string]bool{},
		RaggedInputs:    map[string]bool{},
		Logger:          logger,
	}
	if o := sb.GetOldest(); o != nil {
		opts.Strategy = scheduler.SequenceOldest
		opts.MaxCandidateSequences = int(o.GetMaxCandidateSequences())
		opts.MaxQueueDelay = time.Duration(o.GetMaxQueueDelayMicroseconds()) * time.Microsecond
		opts.PreserveOrdering = o.GetPreserveOrdering()
		for _, size := range o.GetPreferredBatchSize() {
			opts.PreferredBatchSizes = append(opts.PreferredBatchSizes, int(size))
		}
	} else {
		d := sb.GetDirect()
		opts.MaxQueueDelay = time.Duration(d.GetMaxQueueDelayMicroseconds()) * time.Microsecond
		opts.MinimumSlotUtilization = float64(d.GetMinimumSlotUtilization())
	}
	for _, out := range cfg.GetOutput() {
		opts.ModelOutputs[out.GetName()] = true
	}
	for _, in := range cfg.GetInput() {
		if in.GetAllowRaggedBatch() {
			opts.RaggedInputs[in.GetName()] = true
		}
	}
	for _, ci := range sb.GetControlInput() {
		for _, c := range ci.GetControl() {
			sc, err := sequenceControl(ci.GetName(), c)
			if err != nil {
				return opts, fmt.Errorf("sequence_batching control_input '%s': %w", ci.GetName(), err)
			}
			opts.Controls = append(opts.Controls, sc)
		}
	}
	seen := map[string]bool{}
	for _, st := range sb.GetState() {
		if seen[st.GetInputName()] {
			return opts, inference.InvalidArg("State input name '%s' specified more than once.", st.GetInputName())
		}
		seen[st.GetInputName()] = true
		s, err := sequenceState(st, modelDir)
		if err != nil {
			return opts, err
		}
		opts.States = append(opts.States, s)
	}
	return opts, nil
}

// sequenceControl encodes one control's false and true values. START,
// READY and END take their type from the *_false_true field that is set;
// the configuration check has made sure exactly one is.
func sequenceControl(name string, c *inferencepb.ModelSequenceBatching_Control) (scheduler.SequenceControl, error) {
	sc := scheduler.SequenceControl{Name: name}
	switch c.GetKind() {
	case inferencepb.ModelSequenceBatching_Control_CONTROL_SEQUENCE_START:
		sc.Kind = scheduler.ControlStart
	case inferencepb.ModelSequenceBatching_Control_CONTROL_SEQUENCE_READY:
		sc.Kind = scheduler.ControlReady
	case inferencepb.ModelSequenceBatching_Control_CONTROL_SEQUENCE_END:
		sc.Kind = scheduler.ControlEnd
	case inferencepb.ModelSequenceBatching_Control_CONTROL_SEQUENCE_CORRID:
		sc.Kind = scheduler.ControlCorrID
		sc.DataType = inference.DataType(c.GetDataType())
		return sc, nil
	default:
		return sc, inference.InvalidArg("unknown control kind %v", c.GetKind())
	}
	switch {
	case len(c.GetInt32FalseTrue()) == 2:
		v := c.GetInt32FalseTrue()
		sc.DataType = inference.Int32
		sc.False = binary.LittleEndian.AppendUint32(nil, uint32(v[0]))
		sc.True = binary.LittleEndian.AppendUint32(nil, uint32(v[1]))
	case len(c.GetFp32FalseTrue()) == 2:
		v := c.GetFp32FalseTrue()
		sc.DataType = inference.FP32
		sc.False = binary.LittleEndian.AppendUint32(nil, math.Float32bits(v[0]))
		sc.True = binary.LittleEndian.AppendUint32(nil, math.Float32bits(v[1]))
	case len(c.GetBoolFalseTrue()) == 2:
		v := c.GetBoolFalseTrue()
		sc.DataType = inference.Bool
		sc.False, sc.True = []byte{boolByte(v[0])}, []byte{boolByte(v[1])}
	default:
		return sc, inference.InvalidArg("control %v must specify 'int32_false_true', 'fp32_false_true' or 'bool_false_true' with 2 entries", c.GetKind())
	}
	return sc, nil
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// sequenceState reads one implicit state and its initial value, with
// Triton's rules and messages for initial_state.
func sequenceState(st *inferencepb.ModelSequenceBatching_State, modelDir string) (scheduler.SequenceState, error) {
	name := st.GetInputName()
	s := scheduler.SequenceState{
		InputName:  name,
		OutputName: st.GetOutputName(),
		DataType:   inference.DataType(st.GetDataType()),
	}
	if name == "" || s.OutputName == "" {
		return s, inference.InvalidArg("sequence_batching state must specify 'input_name' and 'output_name'")
	}
	if !s.DataType.Valid() {
		return s, inference.InvalidArg("sequence_batching state '%s' must specify a valid 'data_type'", name)
	}
	// Without an initial state a sequence starts from zeros, variable
	// dimensions taken as 1.
	for _, d := range st.GetDims() {
		if d < -1 {
			return s, inference.InvalidArg("sequence_batching state '%s' has an invalid dimension %d: dimensions must be >= 0, or -1 for a variable-size one", name, d)
		}
		s.Shape = append(s.Shape, max(d, 1))
	}
	inits := st.GetInitialState()
	if len(inits) > 1 {
		return s, inference.InvalidArg("initial_state field for state input '%s' must contain exactly one or zero element. Found '%d' elements.", name, len(inits))
	}
	if len(inits) == 0 {
		return s, nil
	}
	init := inits[0]
	if init.GetDataType() != st.GetDataType() {
		return s, inference.InvalidArg("The data type used for 'initial_state' field of state '%s' does not match the state data type.", name)
	}
	if init.GetName() == "" {
		return s, inference.InvalidArg("Field 'name' must be set when using initial_state for state input '%s'.", name)
	}
	if len(init.GetDims()) != len(st.GetDims()) {
		return s, inference.InvalidArg("Number of dimensions in 'initial_state' doesn't match the size of 'state' dimensions for state input '%s'. %d != %d",
			name, len(init.GetDims()), len(st.GetDims()))
	}
	s.Shape = nil
	for i, d := range init.GetDims() {
		if d == -1 {
			return s, inference.InvalidArg("'initial_state' field for state input name '%s' contains variable dimensions.", name)
		}
		if d < 0 {
			return s, inference.InvalidArg("'initial_state' field for state input name '%s' has an invalid dimension %d.", name, d)
		}
		if sd := st.GetDims()[i]; sd != -1 && sd != d {
			return s, inference.InvalidArg("'initial_state' dim for input name '%s' doesn't match 'state' dim description. %d != %d", name, d, sd)
		}
		s.Shape = append(s.Shape, d)
	}
	switch data := init.GetStateData().(type) {
	case *inferencepb.ModelSequenceBatching_InitialState_ZeroData:
		// zeros: nil Data
	case *inferencepb.ModelSequenceBatching_InitialState_DataFile:
		// A load request's config may name the file: keep it inside the
		// model's initial_state folder.
		if !filepath.IsLocal(data.DataFile) {
			return s, inference.InvalidArg("initial_state data_file '%s' for state input '%s' must be a relative path inside the model's %s folder", data.DataFile, name, initialStateDir)
		}
		path := filepath.Join(modelDir, initialStateDir, data.DataFile)
		b, err := os.ReadFile(path)
		if err != nil {
			return s, inference.InvalidArg("unable to read initial_state data_file for state input '%s': %v", name, err)
		}
		if s.DataType == inference.Bytes {
			if _, err := inference.CountBytesElements(name, b); err != nil {
				return s, err
			}
			s.Data = b
			break
		}
		size := inference.ByteSize(s.DataType, s.Shape)
		if size < 0 {
			return s, inference.InvalidArg("'initial_state' for state input '%s' has a shape %v whose byte size overflows", name, s.Shape)
		}
		if int64(len(b)) < size {
			return s, inference.InvalidArg("initial_state setting expects %d bytes, but the data provided from %s only has %d bytes.", size, data.DataFile, len(b))
		}
		s.Data = b[:size]
	default:
		return s, inference.InvalidArg("initial_state setting expects state '%s' to have state_data set", name)
	}
	return s, nil
}
