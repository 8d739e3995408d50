package grpcfront

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/healthpb"
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/repository"
)

func TestServerLiveAndReady(t *testing.T) {
	for _, tc := range []struct{ notLive, notReady bool }{{false, false}, {true, true}, {false, true}} {
		c := start(t, &fakeCore{notLive: tc.notLive, notReady: tc.notReady}, Options{})
		ctx := testCtx(t)
		live, err := c.infer.ServerLive(ctx, &inferencepb.ServerLiveRequest{})
		if err != nil || live.GetLive() == tc.notLive {
			t.Errorf("ServerLive = %v, %v; want live=%v", live, err, !tc.notLive)
		}
		ready, err := c.infer.ServerReady(ctx, &inferencepb.ServerReadyRequest{})
		if err != nil || ready.GetReady() == tc.notReady {
			t.Errorf("ServerReady = %v, %v; want ready=%v", ready, err, !tc.notReady)
		}
	}
}

func TestHealthCheckFollowsReadiness(t *testing.T) {
	for _, notReady := range []bool{false, true} {
		c := start(t, &fakeCore{notReady: notReady}, Options{})
		want := healthpb.HealthCheckResponse_SERVING
		if notReady {
			want = healthpb.HealthCheckResponse_NOT_SERVING
		}
		for _, svc := range []string{"", "inference.GRPCInferenceService", "anything"} {
			resp, err := c.health.Check(testCtx(t), &healthpb.HealthCheckRequest{Service: svc})
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetStatus() != want {
				t.Errorf("Check(%q) with notReady=%v = %v, want %v", svc, notReady, resp.GetStatus(), want)
			}
		}
		// Like Triton, no Watch.
		err := c.conn.Invoke(testCtx(t), "/grpc.health.v1.Health/Watch", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
		wantCode(t, err, codes.Unimplemented, "")
	}
}

func TestModelReady(t *testing.T) {
	core := &fakeCore{modelReady: func(_ context.Context, name, version string) (bool, error) {
		switch name {
		case "ready":
			return true, nil
		case "notready":
			return false, nil
		case "loading":
			return false, inference.Unavailable("request for model 'loading' version %s is not at ready state", version)
		case "broken":
			return false, inference.Internal("broken")
		default:
			return false, inference.NotFound("Request for unknown model: '%s' is not found", name)
		}
	}}
	c := start(t, core, Options{})
	ctx := testCtx(t)

	r, err := c.infer.ModelReady(ctx, &inferencepb.ModelReadyRequest{Name: "ready"})
	if err != nil || !r.GetReady() {
		t.Errorf("ready model: %v, %v", r, err)
	}
	r, err = c.infer.ModelReady(ctx, &inferencepb.ModelReadyRequest{Name: "notready"})
	if err != nil || r.GetReady() {
		t.Errorf("model-level not ready: %v, %v", r, err)
	}
	// A version not at ready state, and a model the core does not serve
	// (unknown, or known and unloaded), are "not ready", as in Triton,
	// whose clients (simple_grpc_model_control.py) rely on it.
	for _, name := range []string{"loading", "nope"} {
		r, err = c.infer.ModelReady(ctx, &inferencepb.ModelReadyRequest{Name: name, Version: "3"})
		if err != nil || r.GetReady() {
			t.Errorf("%s: %v, %v; want ready: false", name, r, err)
		}
	}
	_, err = c.infer.ModelReady(ctx, &inferencepb.ModelReadyRequest{Name: "broken"})
	wantCode(t, err, codes.Internal, "broken")
}

func TestServerMetadata(t *testing.T) {
	md := &inferencepb.ServerMetadataResponse{Name: "triton", Version: "2.73.0", Extensions: []string{"classification", "sequence"}}
	c := start(t, &fakeCore{metadata: md}, Options{})
	got, err := c.infer.ServerMetadata(testCtx(t), &inferencepb.ServerMetadataRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, md) {
		t.Errorf("ServerMetadata = %v, want %v", got, md)
	}
}

func TestModelMetadataConfigStatistics(t *testing.T) {
	var calls []string
	core := &fakeCore{
		modelMetadata: func(_ context.Context, name, version string) (*inferencepb.ModelMetadataResponse, error) {
			calls = append(calls, "metadata "+name+"/"+version)
			if name == "missing" {
				return nil, inference.NotFound("Request for unknown model: '%s' is not found", name)
			}
			return &inferencepb.ModelMetadataResponse{
				Name: name, Versions: []string{"1"}, Platform: "onnxruntime_onnx",
				Inputs: []*inferencepb.ModelMetadataResponse_TensorMetadata{{Name: "IN", Datatype: "FP32", Shape: []int64{-1, 3}}},
			}, nil
		},
		modelConfig: func(_ context.Context, name, version string) (*inferencepb.ModelConfig, error) {
			calls = append(calls, "config "+name+"/"+version)
			if name == "missing" {
				return nil, inference.NotFound("Request for unknown model: '%s' is not found", name)
			}
			return &inferencepb.ModelConfig{Name: name, MaxBatchSize: 8, Backend: "onnxruntime"}, nil
		},
		modelStats: func(_ context.Context, name, version string) (*inferencepb.ModelStatisticsResponse, error) {
			calls = append(calls, "stats "+name+"/"+version)
			if name == "missing" {
				return nil, inference.NotFound("Request for unknown model: '%s' is not found", name)
			}
			if name == "" {
				return nil, nil
			}
			return &inferencepb.ModelStatisticsResponse{ModelStats: []*inferencepb.ModelStatistics{{Name: name, Version: "1", InferenceCount: 7}}}, nil
		},
	}
	c := start(t, core, Options{})
	ctx := testCtx(t)

	md, err := c.infer.ModelMetadata(ctx, &inferencepb.ModelMetadataRequest{Name: "m", Version: "1"})
	if err != nil || md.GetPlatform() != "onnxruntime_onnx" || md.GetInputs()[0].GetShape()[0] != -1 {
		t.Errorf("ModelMetadata = %v, %v", md, err)
	}
	cfg, err := c.infer.ModelConfig(ctx, &inferencepb.ModelConfigRequest{Name: "m", Version: "2"})
	if err != nil || cfg.GetConfig().GetMaxBatchSize() != 8 || cfg.GetConfig().GetBackend() != "onnxruntime" {
		t.Errorf("ModelConfig = %v, %v", cfg, err)
	}
	st, err := c.infer.ModelStatistics(ctx, &inferencepb.ModelStatisticsRequest{Name: "m"})
	if err != nil || st.GetModelStats()[0].GetInferenceCount() != 7 {
		t.Errorf("ModelStatistics = %v, %v", st, err)
	}
	st, err = c.infer.ModelStatistics(ctx, &inferencepb.ModelStatisticsRequest{})
	if err != nil || len(st.GetModelStats()) != 0 {
		t.Errorf("ModelStatistics(all, none) = %v, %v", st, err)
	}

	_, err = c.infer.ModelMetadata(ctx, &inferencepb.ModelMetadataRequest{Name: "missing"})
	wantCode(t, err, codes.NotFound, "'missing'")
	_, err = c.infer.ModelConfig(ctx, &inferencepb.ModelConfigRequest{Name: "missing"})
	wantCode(t, err, codes.NotFound, "'missing'")
	_, err = c.infer.ModelStatistics(ctx, &inferencepb.ModelStatisticsRequest{Name: "missing"})
	wantCode(t, err, codes.NotFound, "'missing'")

	want := []string{"metadata m/1", "config m/2", "stats m/", "stats /", "metadata missing/", "config missing/", "stats missing/"}
	if fmt.Sprint(calls) != fmt.Sprint(want) {
		t.Errorf("core calls = %q, want %q", calls, want)
	}
}

func TestRepositoryIndex(t *testing.T) {
	var readyOnly []bool
	core := &fakeCore{index: func(_ context.Context, ready bool) ([]repository.IndexEntry, error) {
		readyOnly = append(readyOnly, ready)
		return []repository.IndexEntry{
			{Name: "a", Version: "1", State: repository.StateReady},
			{Name: "b", Version: "2", State: repository.StateUnavailable, Reason: "unloaded"},
			{Name: "never_loaded"},
		}, nil
	}}
	c := start(t, core, Options{})
	ctx := testCtx(t)

	got, err := c.infer.RepositoryIndex(ctx, &inferencepb.RepositoryIndexRequest{Ready: true})
	if err != nil {
		t.Fatal(err)
	}
	want := &inferencepb.RepositoryIndexResponse{Models: []*inferencepb.RepositoryIndexResponse_ModelIndex{
		{Name: "a", Version: "1", State: "READY"},
		{Name: "b", Version: "2", State: "UNAVAILABLE", Reason: "unloaded"},
		{Name: "never_loaded"},
	}}
	if !proto.Equal(got, want) {
		t.Errorf("RepositoryIndex = %v, want %v", got, want)
	}

	_, err = c.infer.RepositoryIndex(ctx, &inferencepb.RepositoryIndexRequest{RepositoryName: "repo"})
	wantCode(t, err, codes.Unimplemented, "'repository_name' specification is not supported")
	if fmt.Sprint(readyOnly) != "[true]" {
		t.Errorf("core saw readyOnly = %v, want [true]", readyOnly)
	}
}

func strParam(s string) *inferencepb.ModelRepositoryParameter {
	return &inferencepb.ModelRepositoryParameter{ParameterChoice: &inferencepb.ModelRepositoryParameter_StringParam{StringParam: s}}
}

func bytesParam(b []byte) *inferencepb.ModelRepositoryParameter {
	return &inferencepb.ModelRepositoryParameter{ParameterChoice: &inferencepb.ModelRepositoryParameter_BytesParam{BytesParam: b}}
}

func boolParam(b bool) *inferencepb.ModelRepositoryParameter {
	return &inferencepb.ModelRepositoryParameter{ParameterChoice: &inferencepb.ModelRepositoryParameter_BoolParam{BoolParam: b}}
}

func intParam(i int64) *inferencepb.ModelRepositoryParameter {
	return &inferencepb.ModelRepositoryParameter{ParameterChoice: &inferencepb.ModelRepositoryParameter_Int64Param{Int64Param: i}}
}

func TestRepositoryModelLoad(t *testing.T) {
	type loadCall struct {
		name string
		opts repository.LoadOptions
		done bool // ctx not cancelled
	}
	var got []loadCall
	core := &fakeCore{load: func(ctx context.Context, name string, opts repository.LoadOptions) error {
		got = append(got, loadCall{name, opts, ctx.Done() == nil})
		if name == "broken" {
			return inference.Internal("failed to load '%s', failed to poll from model repository", name)
		}
		return nil
	}}
	c := start(t, core, Options{})
	ctx := testCtx(t)

	_, err := c.infer.RepositoryModelLoad(ctx, &inferencepb.RepositoryModelLoadRequest{ModelName: "plain"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.infer.RepositoryModelLoad(ctx, &inferencepb.RepositoryModelLoadRequest{
		ModelName: "override",
		Parameters: map[string]*inferencepb.ModelRepositoryParameter{
			"config":             strParam(`{"backend":"onnxruntime"}`),
			"file:1/model.onnx":  bytesParam([]byte{0, 1, 2}),
			"file:1/labels.txt":  bytesParam([]byte("cat\n")),
			"file:2/sub/dir.bin": bytesParam(nil),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("core saw %d loads, want 2", len(got))
	}
	if got[0].name != "plain" || got[0].opts.Config != "" || got[0].opts.Files != nil || !got[0].done {
		t.Errorf("plain load = %+v", got[0])
	}
	o := got[1].opts
	if got[1].name != "override" || o.Config != `{"backend":"onnxruntime"}` || len(o.Files) != 3 ||
		string(o.Files["1/model.onnx"]) != "\x00\x01\x02" || string(o.Files["1/labels.txt"]) != "cat\n" {
		t.Errorf("override load = %+v", got[1])
	}
	if _, ok := o.Files["2/sub/dir.bin"]; !ok {
		t.Errorf("empty file entry missing: %v", o.Files)
	}

	for _, tc := range []struct {
		req  *inferencepb.RepositoryModelLoadRequest
		code codes.Code
		msg  string
	}{
		{&inferencepb.RepositoryModelLoadRequest{ModelName: "m", Parameters: map[string]*inferencepb.ModelRepositoryParameter{"config": bytesParam([]byte("{}"))}},
			codes.InvalidArgument, "invalid value type for load parameter 'config', expected string_param."},
		{&inferencepb.RepositoryModelLoadRequest{ModelName: "m", Parameters: map[string]*inferencepb.ModelRepositoryParameter{"config": intParam(1)}},
			codes.InvalidArgument, "expected string_param"},
		{&inferencepb.RepositoryModelLoadRequest{ModelName: "m", Parameters: map[string]*inferencepb.ModelRepositoryParameter{"file:1/model.onnx": strParam("AAEC")}},
			codes.InvalidArgument, "invalid value type for load parameter 'file:1/model.onnx', expected bytes_param."},
		{&inferencepb.RepositoryModelLoadRequest{ModelName: "m", Parameters: map[string]*inferencepb.ModelRepositoryParameter{"file:1/x": {}}},
			codes.InvalidArgument, "expected bytes_param"},
		{&inferencepb.RepositoryModelLoadRequest{ModelName: "m", Parameters: map[string]*inferencepb.ModelRepositoryParameter{"unknown": boolParam(true)}},
			codes.InvalidArgument, "unrecognized load parameter 'unknown'."},
		{&inferencepb.RepositoryModelLoadRequest{ModelName: "m", RepositoryName: "r"},
			codes.Unimplemented, "'repository_name' specification is not supported"},
		{&inferencepb.RepositoryModelLoadRequest{ModelName: "broken"},
			codes.Internal, "failed to load 'broken'"},
	} {
		_, err := c.infer.RepositoryModelLoad(ctx, tc.req)
		wantCode(t, err, tc.code, tc.msg)
	}
	if len(got) != 3 {
		t.Errorf("core saw %d loads, want 3 (rejected requests must not reach it)", len(got))
	}
}

func TestRepositoryModelUnload(t *testing.T) {
	var got []string
	core := &fakeCore{unload: func(ctx context.Context, name string, dependents bool) error {
		got = append(got, fmt.Sprintf("%s %v %v", name, dependents, ctx.Done() == nil))
		if name == "busy" {
			return inference.Unavailable("explicit model load / unload is not allowed if polling is enabled")
		}
		return nil
	}}
	c := start(t, core, Options{})
	ctx := testCtx(t)

	for _, req := range []*inferencepb.RepositoryModelUnloadRequest{
		{ModelName: "a"},
		{ModelName: "b", Parameters: map[string]*inferencepb.ModelRepositoryParameter{"unload_dependents": boolParam(true)}},
		{ModelName: "c", Parameters: map[string]*inferencepb.ModelRepositoryParameter{"unload_dependents": boolParam(false), "other": intParam(3)}},
	} {
		if _, err := c.infer.RepositoryModelUnload(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	_, err := c.infer.RepositoryModelUnload(ctx, &inferencepb.RepositoryModelUnloadRequest{
		ModelName: "d", Parameters: map[string]*inferencepb.ModelRepositoryParameter{"unload_dependents": strParam("true")},
	})
	wantCode(t, err, codes.InvalidArgument, "invalid value type for 'unload_dependents' parameter, expected bool_param.")
	_, err = c.infer.RepositoryModelUnload(ctx, &inferencepb.RepositoryModelUnloadRequest{ModelName: "e", RepositoryName: "r"})
	wantCode(t, err, codes.Unimplemented, "'repository_name' specification is not supported")
	_, err = c.infer.RepositoryModelUnload(ctx, &inferencepb.RepositoryModelUnloadRequest{ModelName: "busy"})
	wantCode(t, err, codes.Unavailable, "polling is enabled")

	want := []string{"a false true", "b true true", "c false true", "busy false true"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("core unloads = %q, want %q", got, want)
	}
}

func TestSharedMemoryTraceAndLogUnimplemented(t *testing.T) {
	c := start(t, &fakeCore{}, Options{})
	ctx := testCtx(t)
	cl := c.infer
	for name, call := range map[string]func() error{
		"SystemSharedMemoryStatus": func() error {
			_, err := cl.SystemSharedMemoryStatus(ctx, &inferencepb.SystemSharedMemoryStatusRequest{})
			return err
		},
		"SystemSharedMemoryRegister": func() error {
			_, err := cl.SystemSharedMemoryRegister(ctx, &inferencepb.SystemSharedMemoryRegisterRequest{Name: "r", Key: "/k", ByteSize: 16})
			return err
		},
		"SystemSharedMemoryUnregister": func() error {
			_, err := cl.SystemSharedMemoryUnregister(ctx, &inferencepb.SystemSharedMemoryUnregisterRequest{})
			return err
		},
		"CudaSharedMemoryStatus": func() error {
			_, err := cl.CudaSharedMemoryStatus(ctx, &inferencepb.CudaSharedMemoryStatusRequest{})
			return err
		},
		"CudaSharedMemoryRegister": func() error {
			_, err := cl.CudaSharedMemoryRegister(ctx, &inferencepb.CudaSharedMemoryRegisterRequest{Name: "r"})
			return err
		},
		"CudaSharedMemoryUnregister": func() error {
			_, err := cl.CudaSharedMemoryUnregister(ctx, &inferencepb.CudaSharedMemoryUnregisterRequest{Name: "r"})
			return err
		},
	} {
		t.Run(name, func(t *testing.T) { wantCode(t, call(), codes.Unimplemented, "--allow-client-shm=true") })
	}
	// Without a tracer or log controls, Triton built without them answers UNAVAILABLE.
	_, err := cl.TraceSetting(ctx, &inferencepb.TraceSettingRequest{})
	wantCode(t, err, codes.Unavailable, "the server does not support trace")
	_, err = cl.LogSettings(ctx, &inferencepb.LogSettingsRequest{})
	wantCode(t, err, codes.Unavailable, "the server does not support dynamic logging")
}

func TestErrorCodeMapping(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code codes.Code
		msg  string
	}{
		{inference.Internal("boom"), codes.Internal, "boom"},
		{inference.NotFound("no model"), codes.NotFound, "no model"},
		{inference.Unavailable("queue full"), codes.Unavailable, "queue full"},
		{inference.Unsupported("decoupled"), codes.Unimplemented, "decoupled"},
		{inference.InvalidArg("bad input"), codes.InvalidArgument, "bad input"},
		{inference.Errorf(inference.CodeAlreadyExists, "exists"), codes.AlreadyExists, "exists"},
		{inference.Errorf(inference.CodeCancelled, "cancelled"), codes.Canceled, "cancelled"},
		{inference.Errorf(inference.CodeUnknown, "unknown"), codes.Unknown, "unknown"},
		{fmt.Errorf("while scheduling: %w", inference.Unavailable("queue full")), codes.Unavailable, "while scheduling: queue full"},
		{errors.New("plain"), codes.Internal, "plain"},
		{fmt.Errorf("infer: %w", context.Canceled), codes.Canceled, "context canceled"},
		{context.DeadlineExceeded, codes.DeadlineExceeded, "deadline"},
		{status.Error(codes.ResourceExhausted, "already a status"), codes.ResourceExhausted, "already a status"},
	} {
		core := &fakeCore{modelMetadata: func(context.Context, string, string) (*inferencepb.ModelMetadataResponse, error) {
			return nil, tc.err
		}}
		c := start(t, core, Options{})
		_, err := c.infer.ModelMetadata(testCtx(t), &inferencepb.ModelMetadataRequest{Name: "m"})
		wantCode(t, err, tc.code, tc.msg)
		if _, isStatus := status.FromError(tc.err); isStatus {
			continue
		}
		if st, _ := status.FromError(err); tc.err.Error() != st.Message() {
			t.Errorf("message = %q, want the error text %q", st.Message(), tc.err.Error())
		}
	}
}

func TestPanicInCoreIsInternal(t *testing.T) {
	core := &fakeCore{
		modelConfig: func(context.Context, string, string) (*inferencepb.ModelConfig, error) { panic("config exploded") },
		infer:       func(context.Context, *inference.Request) (*inference.Response, error) { panic("infer exploded") },
	}
	c := start(t, core, Options{})
	ctx := testCtx(t)
	_, err := c.infer.ModelConfig(ctx, &inferencepb.ModelConfigRequest{Name: "m"})
	wantCode(t, err, codes.Internal, "config exploded")

	stream, err := c.infer.ModelStreamInfer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&inferencepb.ModelInferRequest{ModelName: "m", Id: "p"}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(resp.GetErrorMessage(), "infer exploded") || resp.GetInferResponse().GetId() != "p" {
		t.Errorf("stream response after panic = %v", resp)
	}
	_ = stream.CloseSend()
	// The server still answers.
	if _, err := c.infer.ServerLive(ctx, &inferencepb.ServerLiveRequest{}); err != nil {
		t.Fatal(err)
	}
}

func TestMaxMessageSizeDefault(t *testing.T) {
	// A request above grpc-go's 4 MiB default must be accepted, as
	// Triton accepts up to INT32_MAX.
	c := start(t, &fakeCore{}, Options{})
	big := make([]byte, 5<<20)
	resp, err := c.infer.ModelInfer(testCtx(t), &inferencepb.ModelInferRequest{
		ModelName:        "m",
		Inputs:           []*inferencepb.ModelInferRequest_InferInputTensor{{Name: "IN", Datatype: "UINT8", Shape: []int64{int64(len(big))}}},
		RawInputContents: [][]byte{big},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetRawOutputContents()[0]) != len(big) {
		t.Errorf("output has %d bytes, want %d", len(resp.GetRawOutputContents()[0]), len(big))
	}

	small := start(t, &fakeCore{}, Options{MaxMessageSize: 1 << 20})
	_, err = small.infer.ModelInfer(testCtx(t), &inferencepb.ModelInferRequest{
		ModelName:        "m",
		Inputs:           []*inferencepb.ModelInferRequest_InferInputTensor{{Name: "IN", Datatype: "UINT8", Shape: []int64{int64(len(big))}}},
		RawInputContents: [][]byte{big},
	})
	wantCode(t, err, codes.ResourceExhausted, "")
}

func TestShutdownStopsStreamsAfterDeadline(t *testing.T) {
	entered := make(chan struct{})
	core := &fakeCore{infer: func(ctx context.Context, _ *inference.Request) (*inference.Response, error) {
		close(entered)
		<-ctx.Done()
		return nil, inference.Errorf(inference.CodeCancelled, "cancelled")
	}}
	c := start(t, core, Options{})
	stream, err := c.infer.ModelStreamInfer(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&inferencepb.ModelInferRequest{ModelName: "m"}); err != nil {
		t.Fatal(err)
	}
	<-entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // no grace at all: the open stream forces Stop
	if err := c.srv.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown = %v, want context.Canceled", err)
	}
	if _, err := stream.Recv(); err == nil {
		t.Error("stream still open after Shutdown")
	}
}

// A connection that never sends the HTTP/2 preface (a stalled client, a port
// scanner) does not hold Shutdown past its deadline: grpc-go's Stop would
// wait for its handshake to time out.
func TestShutdownClosesHandshakingConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(&fakeCore{}, Options{})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	// Wait until the server has accepted it.
	for deadline := time.Now().Add(5 * time.Second); ; {
		srv.conns.mu.Lock()
		n := len(srv.conns.m)
		srv.conns.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the connection was not accepted")
		}
		time.Sleep(5 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Shutdown took %v with a connection in its handshake", d)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve = %v", err)
	}
	// The server's own SETTINGS frame may be there to read; then the end.
	_ = raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	var ne net.Error
	if _, err := io.ReadAll(raw); errors.As(err, &ne) && ne.Timeout() {
		t.Error("the handshaking connection is still open")
	}
}
