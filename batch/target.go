package batch

import (
	"context"
	"fmt"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// Target is where a job's requests run: the server core in this process
// (InProcess) or a Nereid or Triton server over HTTP (NewHTTP).
//
// Infer may be called from several goroutines at once. It does not keep
// the request or its tensors once it has returned. The response's output
// Data stays valid until the caller calls its Done, which the caller
// always does; outputs may alias nothing the caller owns. Infer returns
// promptly once ctx is done.
type Target interface {
	Model(ctx context.Context, name, version string) (*Model, error)
	Infer(ctx context.Context, req *inference.Request) (*inference.Response, error)
}

// Model is what a job needs to know of the model it runs: how records map
// to its inputs and whether requests may carry several records.
type Model struct {
	Name    string
	Version string // "" for the version the model's policy serves
	// MaxBatchSize is the configuration's max_batch_size: 0 when the model
	// does not batch, and its inputs' shapes are their dims; otherwise
	// every input has a first, batch dimension before its dims.
	MaxBatchSize int
	Inputs       []Input
}

// Input is one input of the model configuration.
type Input struct {
	Name     string
	DataType inference.DataType
	Dims     []int64 // without the batch dimension; -1 for any size
	Optional bool
}

// input returns the named input, or nil.
func (m *Model) input(name string) *Input {
	for i := range m.Inputs {
		if m.Inputs[i].Name == name {
			return &m.Inputs[i]
		}
	}
	return nil
}

// modelFromConfig is the part of a model configuration a job uses.
func modelFromConfig(name, version string, cfg *inferencepb.ModelConfig) (*Model, error) {
	if cfg.GetModelTransactionPolicy().GetDecoupled() {
		return nil, errDecoupled(name)
	}
	m := &Model{Name: name, Version: version, MaxBatchSize: int(cfg.GetMaxBatchSize())}
	for _, in := range cfg.GetInput() {
		dt := inference.DataType(in.GetDataType())
		if !dt.Valid() {
			return nil, fmt.Errorf("model '%s': input '%s' has data type %s, which a batch job cannot send", name, in.GetName(), in.GetDataType())
		}
		m.Inputs = append(m.Inputs, Input{Name: in.GetName(), DataType: dt, Dims: in.GetDims(), Optional: in.GetOptional()})
	}
	if len(m.Inputs) == 0 {
		return nil, fmt.Errorf("model '%s' has no inputs", name)
	}
	return m, nil
}

// errDecoupled refuses a model that answers a request with 0..N
// responses: a record's outputs are one response's.
func errDecoupled(name string) error {
	return inference.Unsupported("model '%s' has a decoupled transaction policy (0..N responses a request): a batch job needs one response per record", name)
}

// Core is what InProcess needs of the server core (*server.Server).
type Core interface {
	Infer(ctx context.Context, req *inference.Request) (*inference.Response, error)
	ModelConfig(ctx context.Context, name, version string) (*inferencepb.ModelConfig, error)
}

// InProcess runs a job's requests on core directly: no encoding, no
// network hop.
func InProcess(core Core) Target { return coreTarget{core} }

type coreTarget struct{ core Core }

var _ Target = coreTarget{}

func (t coreTarget) Model(ctx context.Context, name, version string) (*Model, error) {
	cfg, err := t.core.ModelConfig(ctx, name, version)
	if err != nil {
		return nil, err
	}
	return modelFromConfig(name, version, cfg)
}

func (t coreTarget) Infer(ctx context.Context, req *inference.Request) (*inference.Response, error) {
	return t.core.Infer(ctx, req)
}
