package hotpath

import (
	"context"
	"encoding/binary"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	_ "github.com/nereid-project/nereid/backends/identity" // registers the identity backend
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/repository"
	"github.com/nereid-project/nereid/server"
	grpcfront "github.com/nereid-project/nereid/server/grpc"
	httpfront "github.com/nereid-project/nereid/server/http"
)

// benchCase is one model and request of the benchmarks.
type benchCase struct {
	name    string // sub-benchmark name
	model   string
	inputs  []input
	outputs []string
	// repo writes the model into a repository directory, or skips b.
	repo func(b *testing.B, dir string)
}

type input struct {
	name, datatype string
	shape          []int64
	data           []byte
}

// identityConfig is an FP32 model of the identity backend: no model file
// and no cgo, so the benchmark measures Nereid's own work.
const identityConfig = `name: "identity_fp32"
backend: "identity"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
`

func identityRepo(b *testing.B, dir string) {
	if err := os.MkdirAll(filepath.Join(dir, "identity_fp32", "1"), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "identity_fp32", "config.pbtxt"), []byte(identityConfig), 0o644); err != nil {
		b.Fatal(err)
	}
}

func fp32s(n int) []byte {
	b := make([]byte, 0, 4*n)
	for i := range n {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(float32(i%1000)/1000))
	}
	return b
}

// cases are the benchmarked requests: identity at two tensor sizes (so that
// costs which grow with the tensor show), and, in a cgo build with the
// ONNX Runtime library, Triton's `simple` (ort_test.go).
var cases = []benchCase{
	identityCase(16),
	identityCase(1 << 16),
}

func identityCase(n int) benchCase {
	return benchCase{
		name: "identity_fp32/elems=" + strconv.Itoa(n), model: "identity_fp32",
		inputs:  []input{{"INPUT0", "FP32", []int64{1, int64(n)}, fp32s(n)}},
		outputs: []string{"OUTPUT0"},
		repo:    identityRepo,
	}
}

// newCore loads the case's model like `nereid --model-repository` does and
// returns the server core.
func newCore(b *testing.B, c benchCase) *server.Server {
	dir := b.TempDir()
	c.repo(b, dir)
	log := zerolog.Nop()
	loader := server.NewLoader(server.LoaderOptions{Logger: log})
	models, err := repository.New(repository.Options{
		Paths: []string{dir}, Mode: repository.ModeNone, AutoComplete: true,
		Loader: loader, Logger: log,
	})
	if err != nil {
		b.Fatal(err)
	}
	core := server.New(models, server.Options{Logger: log})
	loader.Inferer().Bind(core) // for ensembles, as cmd/nereid binds it
	ctx := context.Background()
	if err := models.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = models.Close(ctx) })
	return core
}

// httpRequest is the body perf_analyzer sends: a JSON header naming the
// inputs with binary_data_size and the outputs with binary_data, followed
// by the tensors.
func httpRequest(c benchCase) (body []byte, headerLen int) {
	var h strings.Builder
	h.WriteString(`{"inputs":[`)
	for i, in := range c.inputs {
		if i > 0 {
			h.WriteByte(',')
		}
		shape := make([]string, len(in.shape))
		for j, d := range in.shape {
			shape[j] = strconv.FormatInt(d, 10)
		}
		h.WriteString(`{"name":"` + in.name + `","datatype":"` + in.datatype + `","shape":[` + strings.Join(shape, ",") +
			`],"parameters":{"binary_data_size":` + strconv.Itoa(len(in.data)) + `}}`)
	}
	h.WriteString(`],"outputs":[`)
	for i, out := range c.outputs {
		if i > 0 {
			h.WriteByte(',')
		}
		h.WriteString(`{"name":"` + out + `","parameters":{"binary_data":true}}`)
	}
	h.WriteString(`]}`)
	body = []byte(h.String())
	headerLen = len(body)
	for _, in := range c.inputs {
		body = append(body, in.data...)
	}
	return body, headerLen
}

// BenchmarkHTTPBinary runs the HTTP front end's handler (routing, decode,
// server core, scheduler, backend, encode) on a request context, without
// a network connection, so that allocations are the server's alone.
func BenchmarkHTTPBinary(b *testing.B) {
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			handler := httpfront.New(newCore(b, c), httpfront.Options{Logger: zerolog.Nop()}).Handler()
			body, hl := httpRequest(c)
			var req fasthttp.Request
			req.Header.SetMethod("POST")
			req.SetRequestURI("/v2/models/" + c.model + "/infer")
			req.Header.Set("Inference-Header-Content-Length", strconv.Itoa(hl))
			req.SetBody(body)
			var ctx fasthttp.RequestCtx
			ctx.Init(&req, nil, nil)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				handler(&ctx)
				if ctx.Response.StatusCode() != fasthttp.StatusOK {
					b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
				}
				ctx.Response.Reset()
			}
		})
	}
}

// BenchmarkGRPCRaw sends ModelInfer with raw input contents through the
// gRPC front end over an in-memory connection: the server's protobuf
// decode, core, scheduler, backend and encode, plus grpc-go's transport.
// Allocations include the grpc-go client's in the same process.
func BenchmarkGRPCRaw(b *testing.B) {
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			client := grpcClient(b, newCore(b, c))
			req := &inferencepb.ModelInferRequest{ModelName: c.model}
			size := 0
			for _, in := range c.inputs {
				req.Inputs = append(req.Inputs, &inferencepb.ModelInferRequest_InferInputTensor{Name: in.name, Datatype: in.datatype, Shape: in.shape})
				req.RawInputContents = append(req.RawInputContents, in.data)
				size += len(in.data)
			}
			for _, out := range c.outputs {
				req.Outputs = append(req.Outputs, &inferencepb.ModelInferRequest_InferRequestedOutputTensor{Name: out})
			}
			ctx := context.Background()
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				resp, err := client.ModelInfer(ctx, req)
				if err != nil {
					b.Fatal(err)
				}
				if len(resp.RawOutputContents) != len(c.outputs) {
					b.Fatalf("%d raw outputs, want %d", len(resp.RawOutputContents), len(c.outputs))
				}
			}
		})
	}
}

// grpcClient serves the gRPC front end on an in-memory listener for the
// benchmark's duration and returns a client connected to it.
func grpcClient(b *testing.B, core *server.Server) inferencepb.GRPCInferenceServiceClient {
	srv := grpcfront.New(core, grpcfront.Options{Logger: zerolog.Nop()})
	ln := bufconn.Listen(4 << 20)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32), grpc.MaxCallSendMsgSize(math.MaxInt32)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = conn.Close()
		_ = srv.Shutdown(context.Background())
		<-served
	})
	return inferencepb.NewGRPCInferenceServiceClient(conn)
}
