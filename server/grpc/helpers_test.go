package grpcfront

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/healthpb"
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/repository"
	"github.com/nereid-project/nereid/server"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The core satisfies the interface the front end declares.
var _ Core = (*server.Server)(nil)

// fakeCore is a Core whose behaviour each test sets through function fields;
// unset fields give a live, ready server with an identity model.
type fakeCore struct {
	notLive, notReady bool
	metadata          *inferencepb.ServerMetadataResponse

	modelReady    func(ctx context.Context, name, version string) (bool, error)
	modelMetadata func(ctx context.Context, name, version string) (*inferencepb.ModelMetadataResponse, error)
	modelConfig   func(ctx context.Context, name, version string) (*inferencepb.ModelConfig, error)
	modelStats    func(ctx context.Context, name, version string) (*inferencepb.ModelStatisticsResponse, error)
	index         func(ctx context.Context, readyOnly bool) ([]repository.IndexEntry, error)
	load          func(ctx context.Context, name string, opts repository.LoadOptions) error
	unload        func(ctx context.Context, name string, unloadDependents bool) error
	infer         func(ctx context.Context, req *inference.Request) (*inference.Response, error)
	// inferStream serves InferStream; unset, InferStream answers with
	// infer's (or the identity) response as the final one.
	inferStream func(ctx context.Context, req *inference.Request, out inference.ResponseFunc) error
	shm         *fakeShm // shared-memory calls; nil answers as with --allow-client-shm=false
}

func (f *fakeCore) Live() bool  { return !f.notLive }
func (f *fakeCore) Ready() bool { return !f.notReady }
func (f *fakeCore) Metadata() *inferencepb.ServerMetadataResponse {
	if f.metadata != nil {
		return f.metadata
	}
	return &inferencepb.ServerMetadataResponse{Name: "triton", Version: "2.73.0", Extensions: []string{"statistics"}}
}

func (f *fakeCore) ModelReady(ctx context.Context, name, version string) (bool, error) {
	if f.modelReady != nil {
		return f.modelReady(ctx, name, version)
	}
	return true, nil
}

func (f *fakeCore) ModelMetadata(ctx context.Context, name, version string) (*inferencepb.ModelMetadataResponse, error) {
	if f.modelMetadata != nil {
		return f.modelMetadata(ctx, name, version)
	}
	return &inferencepb.ModelMetadataResponse{Name: name}, nil
}

func (f *fakeCore) ModelConfig(ctx context.Context, name, version string) (*inferencepb.ModelConfig, error) {
	if f.modelConfig != nil {
		return f.modelConfig(ctx, name, version)
	}
	return &inferencepb.ModelConfig{Name: name}, nil
}

func (f *fakeCore) ModelStatistics(ctx context.Context, name, version string) (*inferencepb.ModelStatisticsResponse, error) {
	if f.modelStats != nil {
		return f.modelStats(ctx, name, version)
	}
	return nil, nil
}

func (f *fakeCore) RepositoryIndex(ctx context.Context, readyOnly bool) ([]repository.IndexEntry, error) {
	if f.index != nil {
		return f.index(ctx, readyOnly)
	}
	return nil, nil
}

func (f *fakeCore) LoadModel(ctx context.Context, name string, opts repository.LoadOptions) error {
	if f.load != nil {
		return f.load(ctx, name, opts)
	}
	return nil
}

func (f *fakeCore) UnloadModel(ctx context.Context, name string, unloadDependents bool) error {
	if f.unload != nil {
		return f.unload(ctx, name, unloadDependents)
	}
	return nil
}

func (f *fakeCore) Infer(ctx context.Context, req *inference.Request) (*inference.Response, error) {
	if f.infer != nil {
		return f.infer(ctx, req)
	}
	return identity(req), nil
}

func (f *fakeCore) InferStream(ctx context.Context, req *inference.Request, out inference.ResponseFunc) error {
	if f.inferStream != nil {
		return f.inferStream(ctx, req, out)
	}
	resp, err := f.Infer(ctx, req)
	if err != nil {
		return err
	}
	return out(resp, true)
}

// identity answers with the inputs renamed OUT<i>, as the identity backend
// would.
func identity(req *inference.Request) *inference.Response {
	resp := &inference.Response{ID: req.ID, ModelName: req.ModelName, ModelVersion: "1"}
	for _, in := range req.Inputs {
		out := in
		out.Name = "OUT" + in.Name
		out.Parameters = nil
		resp.Outputs = append(resp.Outputs, out)
	}
	return resp
}

type clients struct {
	conn   *grpc.ClientConn
	infer  inferencepb.GRPCInferenceServiceClient
	health healthpb.HealthClient
	srv    *Server
}

// start serves core on an in-memory listener and returns clients for it;
// everything is torn down when the test ends.
func start(t testing.TB, core Core, opts Options) clients {
	t.Helper()
	ln := bufconn.Listen(1 << 20)
	srv := New(core, opts)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return clients{
		conn:   conn,
		infer:  inferencepb.NewGRPCInferenceServiceClient(conn),
		health: healthpb.NewHealthClient(conn),
		srv:    srv,
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// wantCode fails unless err is a gRPC status with the code and, when
// substr is not empty, a message containing it.
func wantCode(t *testing.T, err error, code codes.Code, substr string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("error %v is not a gRPC status", err)
	}
	if st.Code() != code {
		t.Fatalf("code = %v (%q), want %v", st.Code(), st.Message(), code)
	}
	if substr != "" && !strings.Contains(st.Message(), substr) {
		t.Fatalf("message %q does not contain %q", st.Message(), substr)
	}
}

// counter tracks how many calls are inside a section and the most ever seen.
type counter struct {
	mu       sync.Mutex // guards the fields below
	cur, max int
}

func (c *counter) enter() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cur++
	if c.cur > c.max {
		c.max = c.cur
	}
	return c.cur
}

func (c *counter) leave() {
	c.mu.Lock()
	c.cur--
	c.mu.Unlock()
}

func (c *counter) peak() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.max
}
