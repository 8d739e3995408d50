package analyze

import (
	"context"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/procmem"
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/repository"
)

// Core is what the in-process target needs of the server core
// (*server.Server): inference, the model's configuration and statistics,
// and the repository's load with a configuration override (explicit model
// control mode).
type Core interface {
	// Infer runs one request and returns its response, whose Done the
	// caller calls once it is through with it. It does not keep req.
	Infer(ctx context.Context, req *inference.Request) (*inference.Response, error)
	ModelConfig(ctx context.Context, name, version string) (*inferencepb.ModelConfig, error)
	ModelStatistics(ctx context.Context, name, version string) (*inferencepb.ModelStatisticsResponse, error)
	LoadModel(ctx context.Context, name string, opts repository.LoadOptions) error
}

// InProcess is a target that calls a server core in this process: no
// network hop, so the figures are the core's, scheduler and backend.
type InProcess struct {
	core Core
}

var (
	_ Target        = (*InProcess)(nil)
	_ ProcessMemory = (*InProcess)(nil)
)

// NewInProcess returns a target over core.
func NewInProcess(core Core) *InProcess { return &InProcess{core: core} }

// Name implements Target.
func (t *InProcess) Name() string { return "in-process Nereid" }

// Config implements Target.
func (t *InProcess) Config(ctx context.Context, model string) (*inferencepb.ModelConfig, error) {
	return t.core.ModelConfig(ctx, model, "")
}

// Load implements Target through the repository's load with a
// configuration override, as POST /v2/repository/models/{m}/load with
// parameters.config does.
func (t *InProcess) Load(ctx context.Context, model string, cfg *inferencepb.ModelConfig) error {
	var opts repository.LoadOptions
	if cfg != nil {
		js, err := configJSON(cfg)
		if err != nil {
			return err
		}
		opts.Config = js
	}
	return t.core.LoadModel(ctx, model, opts)
}

// Memory implements Target.
func (t *InProcess) Memory(ctx context.Context, model string) (int64, error) {
	st, err := t.core.ModelStatistics(ctx, model, "")
	if err != nil {
		return 0, err
	}
	return statsMemory(st), nil
}

// ResidentBytes implements ProcessMemory.
func (t *InProcess) ResidentBytes() int64 { return procmem.Resident(0) }

// Caller implements Target: each call is a fresh Request over the same
// input tensors, which the core only reads.
func (t *InProcess) Caller(model string, inputs []inference.Tensor) (Caller, error) {
	return func(ctx context.Context) error {
		req := &inference.Request{ModelName: model, Inputs: inputs}
		resp, err := t.core.Infer(ctx, req)
		if err != nil {
			return err
		}
		resp.Done()
		return nil
	}, nil
}

// configJSON is a configuration as the load request's config parameter:
// protobuf JSON with the proto field names, which Nereid and Triton parse.
func configJSON(cfg *inferencepb.ModelConfig) (string, error) {
	js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(cfg)
	return string(js), err
}

// statsMemory sums the memory_usage of every version in the statistics.
func statsMemory(st *inferencepb.ModelStatisticsResponse) int64 {
	var n int64
	for _, m := range st.GetModelStats() {
		for _, u := range m.GetMemoryUsage() {
			n += int64(u.GetByteSize())
		}
	}
	return n
}
