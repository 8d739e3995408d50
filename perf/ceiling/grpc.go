package main

import (
	"context"
	"encoding/binary"
	"math"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nereid-project/nereid/proto/inferencepb"
)

// grpcFront is the GRPCInferenceService subset that clients and
// perf_analyzer call: health, metadata, config and ModelInfer.
type grpcFront struct {
	inferencepb.UnimplementedGRPCInferenceServiceServer
	models map[string]*model
}

var _ inferencepb.GRPCInferenceServiceServer = (*grpcFront)(nil)

func (g *grpcFront) model(name, version string) (*model, error) {
	m := g.models[name]
	if m == nil || (version != "" && version != "1") {
		return nil, status.Errorf(codes.NotFound, "Request for unknown model: '%s' is not found", name)
	}
	return m, nil
}

func (g *grpcFront) ServerLive(context.Context, *inferencepb.ServerLiveRequest) (*inferencepb.ServerLiveResponse, error) {
	return &inferencepb.ServerLiveResponse{Live: true}, nil
}

func (g *grpcFront) ServerReady(context.Context, *inferencepb.ServerReadyRequest) (*inferencepb.ServerReadyResponse, error) {
	return &inferencepb.ServerReadyResponse{Ready: true}, nil
}

func (g *grpcFront) ModelReady(_ context.Context, req *inferencepb.ModelReadyRequest) (*inferencepb.ModelReadyResponse, error) {
	_, err := g.model(req.Name, req.Version)
	return &inferencepb.ModelReadyResponse{Ready: err == nil}, nil
}

func (g *grpcFront) ServerMetadata(context.Context, *inferencepb.ServerMetadataRequest) (*inferencepb.ServerMetadataResponse, error) {
	return &inferencepb.ServerMetadataResponse{Name: "ceiling", Version: "0.0.0", Extensions: []string{"binary_tensor_data"}}, nil
}

func (g *grpcFront) ModelMetadata(_ context.Context, req *inferencepb.ModelMetadataRequest) (*inferencepb.ModelMetadataResponse, error) {
	m, err := g.model(req.Name, req.Version)
	if err != nil {
		return nil, err
	}
	return m.metadataPB, nil
}

func (g *grpcFront) ModelConfig(_ context.Context, req *inferencepb.ModelConfigRequest) (*inferencepb.ModelConfigResponse, error) {
	m, err := g.model(req.Name, req.Version)
	if err != nil {
		return nil, err
	}
	return &inferencepb.ModelConfigResponse{Config: m.configPB}, nil
}

// ModelInfer computes in place in the request's raw input buffers and
// returns them as the raw outputs.
func (g *grpcFront) ModelInfer(_ context.Context, req *inferencepb.ModelInferRequest) (*inferencepb.ModelInferResponse, error) {
	m, err := g.model(req.ModelName, req.ModelVersion)
	if err != nil {
		return nil, err
	}
	n := len(m.inputs)
	if len(req.Inputs) != n {
		return nil, status.Errorf(codes.InvalidArgument, "expected %d inputs but got %d inputs for model '%s'", n, len(req.Inputs), m.name)
	}
	raw := len(req.RawInputContents) > 0
	if raw && len(req.RawInputContents) != n {
		return nil, status.Errorf(codes.InvalidArgument, "expected %d raw input contents, got %d", n, len(req.RawInputContents))
	}
	bufs := make([][]byte, n)
	shapes := make([][]int64, n)
	for k, in := range req.Inputs {
		i := m.inputIndex([]byte(in.Name))
		if i < 0 || bufs[i] != nil {
			return nil, status.Errorf(codes.InvalidArgument, "unexpected inference input '%s' for model '%s'", in.Name, m.name)
		}
		size, err := m.checkInput(i, []byte(in.Datatype), in.Shape)
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		var data []byte
		if raw {
			data = req.RawInputContents[k]
		} else {
			data = typedContents(in.Contents, in.Datatype)
		}
		if len(data) != size {
			return nil, status.Errorf(codes.InvalidArgument, "unexpected data size for input '%s'", in.Name)
		}
		bufs[i], shapes[i] = data, in.Shape
	}
	for i := 1; i < n; i++ {
		if len(bufs[i]) != len(bufs[0]) {
			return nil, status.Errorf(codes.InvalidArgument, "inputs of model '%s' must have the same shape", m.name)
		}
	}
	m.compute(bufs)

	resp := &inferencepb.ModelInferResponse{ModelName: m.name, ModelVersion: "1", Id: req.Id}
	add := func(i int) {
		t := &m.outputs[i]
		resp.Outputs = append(resp.Outputs, &inferencepb.ModelInferResponse_InferOutputTensor{Name: t.name, Datatype: t.datatype, Shape: shapes[i]})
		resp.RawOutputContents = append(resp.RawOutputContents, bufs[i])
	}
	if len(req.Outputs) == 0 {
		for i := range m.outputs {
			add(i)
		}
		return resp, nil
	}
	for _, o := range req.Outputs {
		i := m.outputIndex([]byte(o.Name))
		if i < 0 {
			return nil, status.Errorf(codes.InvalidArgument, "unexpected inference output '%s' for model '%s'", o.Name, m.name)
		}
		add(i)
	}
	return resp, nil
}

// typedContents converts typed contents to little-endian bytes.
func typedContents(c *inferencepb.InferTensorContents, datatype string) []byte {
	if c == nil {
		return nil
	}
	switch datatype {
	case "INT32":
		b := make([]byte, 0, 4*len(c.IntContents))
		for _, v := range c.IntContents {
			b = binary.LittleEndian.AppendUint32(b, uint32(v))
		}
		return b
	case "FP32":
		b := make([]byte, 0, 4*len(c.Fp32Contents))
		for _, v := range c.Fp32Contents {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
		return b
	}
	return nil
}
