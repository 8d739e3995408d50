package server

import (
	"context"
	"time"

	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/backends/warmup"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/scheduler"
)

// warmupSamples builds the model_warmup samples of a model that is not an
// ensemble. seq is the model's translated sequence_batching (zero without
// one): a sequence model's control and state inputs are the scheduler's to
// supply, so a sample may leave them out, and its executions are then each
// a sequence of one request, as the sequence batcher would prepare it —
// START, END and READY true, correlation ID 0, the initial state — with
// the sequence_start and sequence_end flags set.
func warmupSamples(cfg *inferencepb.ModelConfig, modelDir string, seq scheduler.SequenceOptions) ([]warmup.Sample, error) {
	if len(cfg.GetModelWarmup()) == 0 {
		return nil, nil
	}
	samples, err := warmup.Samples(cfg, modelDir, warmupInputs(cfg, seq))
	if err != nil {
		return nil, err
	}
	if cfg.GetSequenceBatching() != nil {
		for i := range samples {
			samples[i].Parameters = inference.Parameters{"sequence_start": true, "sequence_end": true}
		}
	}
	return samples, nil
}

// warmupInputs lists the inputs a warm-up execution gives the model: the
// configured inputs, then the sequence controls and states.
func warmupInputs(cfg *inferencepb.ModelConfig, seq scheduler.SequenceOptions) []warmup.Input {
	injected := injectedInputs(cfg)
	var ins []warmup.Input
	for _, in := range cfg.GetInput() {
		if !injected[in.GetName()] {
			ins = append(ins, warmup.Input{Name: in.GetName(), DataType: inference.DataType(in.GetDataType()), Dims: in.GetDims(), Optional: in.GetOptional()})
		}
	}
	seen := map[string]bool{}
	for _, c := range seq.Controls {
		if seen[c.Name] {
			continue
		}
		seen[c.Name] = true
		in := warmup.Input{Name: c.Name, DataType: c.DataType, Dims: []int64{1}, Implicit: true}
		if c.Kind != scheduler.ControlCorrID {
			in.Default = c.True // CORRID: zeros, the ID of no sequence
		}
		ins = append(ins, in)
	}
	for _, st := range seq.States {
		ins = append(ins, warmup.Input{Name: st.InputName, DataType: st.DataType, Dims: st.Shape, Implicit: true, Default: st.Data})
	}
	return ins
}

// checkWarmup checks each sample as the server checks a request to the
// model (inputs, types, shapes), so that a sample is refused with the
// message a request would get rather than by the backend.
func (lm *loadedModel) checkWarmup(samples []warmup.Sample) error {
	for _, s := range samples {
		req := &inference.Request{ModelName: lm.name}
		for _, t := range s.Inputs {
			if !lm.injected[t.Name] {
				req.Inputs = append(req.Inputs, t)
			}
		}
		if err := lm.check(req); err != nil {
			return inference.Errorf(inference.CodeOf(err), "model '%s' warm-up sample '%s': %w", lm.name, s.Name, err)
		}
	}
	return nil
}

// warmUp runs the samples on one instance, before the scheduler reaches it
// (as Triton warms each instance): the model is READY only once every
// instance has been warmed. Warm-up executions are not inference requests:
// they are left out of the statistics, the response cache and the rate
// limiter.
func warmUp(ctx context.Context, logger zerolog.Logger, model, instance string, samples []warmup.Sample, inst backends.Instance) error {
	if len(samples) == 0 {
		return nil
	}
	start := time.Now()
	res, err := warmup.Run(ctx, model, instance, samples, inst)
	if err != nil {
		return err
	}
	logger.Debug().Str("instance", instance).Int("samples", len(samples)).Int("executions", res.Executions).
		Int("responses", res.Responses).Dur("took", time.Since(start)).Msg("instance warmed up")
	return nil
}
