package grpcfront

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	_ "github.com/nereid-project/nereid/backends/identity" // the benchmarks' model
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/repository"
	"github.com/nereid-project/nereid/server"
)

// benchRequest is an image-sized FP32 input plus a small INT64 one, both raw.
func benchRequest() *inferencepb.ModelInferRequest {
	img := make([]byte, 3*224*224*4)
	return &inferencepb.ModelInferRequest{
		ModelName: "resnet", Id: "bench",
		Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{
			input("INPUT__0", "FP32", 1, 3, 224, 224),
			input("LEN", "INT64", 1, 1),
		},
		Outputs:          []*inferencepb.ModelInferRequest_InferRequestedOutputTensor{{Name: "OUTINPUT__0"}, {Name: "OUTLEN"}},
		RawInputContents: [][]byte{img, le64(7)},
	}
}

// BenchmarkDecodeEncodeRaw measures the front end's own work on the hot
// path: raw request → inference.Request → (identity) → ModelInferResponse.
func BenchmarkDecodeEncodeRaw(b *testing.B) {
	in := benchRequest()
	b.SetBytes(int64(len(in.RawInputContents[0])))
	b.ReportAllocs()
	for b.Loop() {
		req, err := decodeRequest(in)
		if err != nil {
			b.Fatal(err)
		}
		_ = encodeResponse(in, identity(req))
	}
}

// BenchmarkDecodeEncodeRawWire adds a plain protobuf unmarshal and marshal
// around the conversion, which copy every tensor; BenchmarkInferCodec
// measures the front end's codec instead.
func BenchmarkDecodeEncodeRawWire(b *testing.B) {
	wire, err := proto.Marshal(benchRequest())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(wire)))
	b.ReportAllocs()
	for b.Loop() {
		var in inferencepb.ModelInferRequest
		if err := proto.Unmarshal(wire, &in); err != nil {
			b.Fatal(err)
		}
		req, err := decodeRequest(&in)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := proto.Marshal(encodeResponse(&in, identity(req))); err != nil {
			b.Fatal(err)
		}
	}
}

// Benchmarks of ModelInfer with raw tensors of several sizes, to show which
// costs grow with the tensor. Compare the codec variants with benchstat:
//
//	go test -run '^$' -bench 'ModelInferWire|InferCodec' -benchtime 2000x -count 6 ./server/grpc/ > codec.txt
//	benchstat -col /codec codec.txt
//
// and the transport's buffer pools (framePool against grpc-go's default):
//
//	go test -run '^$' -bench 'ModelInferFrames' -benchtime 2000x -count 6 ./server/grpc/ > frames.txt
//	benchstat -col /frames frames.txt
var wireSizes = []int{1 << 10, 4 << 10, 64 << 10, 1 << 20}

// codecVariants are the server codecs compared: grpc-go's default protobuf
// codec (how the front end decoded and encoded before) and the front end's.
var codecVariants = []struct {
	name  string
	codec func() encoding.CodecV2
}{
	{"grpc", func() encoding.CodecV2 { return encoding.GetCodecV2(protocodec.Name) }},
	{"nereid", func() encoding.CodecV2 { return newCodec(nil) }},
}

// identityCore is the server core with one identity model, "id": output
// OUTPUT0 is input INPUT0, UINT8 of any length, as `nereid
// --model-repository` would load it.
func identityCore(b *testing.B) *server.Server {
	dir := b.TempDir()
	const config = `name: "id"
backend: "identity"
input [ { name: "INPUT0" data_type: TYPE_UINT8 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_UINT8 dims: [ -1 ] } ]
`
	if err := os.MkdirAll(filepath.Join(dir, "id", "1"), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "id", "config.pbtxt"), []byte(config), 0o644); err != nil {
		b.Fatal(err)
	}
	log := zerolog.Nop()
	models, err := repository.New(repository.Options{
		Paths: []string{dir}, Mode: repository.ModeNone,
		Loader: server.NewLoader(server.LoaderOptions{Logger: log}), Logger: log,
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := models.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = models.Close(ctx) })
	return server.New(models, server.Options{Logger: log})
}

// identityWire is a serialized ModelInfer request for "id" with n bytes.
func identityWire(b *testing.B, n int) []byte {
	wire, err := proto.Marshal(&inferencepb.ModelInferRequest{ModelName: "id", Id: "bench",
		Inputs:           []*inferencepb.ModelInferRequest_InferInputTensor{input("INPUT0", "UINT8", int64(n))},
		RawInputContents: [][]byte{bytes.Repeat([]byte{7}, n)},
	})
	if err != nil {
		b.Fatal(err)
	}
	return wire
}

// reusedCodec is a client codec that allocates nothing per call that grows
// with the message: it sends the same serialized request every time and
// only checks the length of the response, so that what the benchmark counts
// beyond a constant is the server's.
type reusedCodec struct {
	wire    []byte
	minResp int
}

func (c *reusedCodec) Marshal(any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(c.wire)}, nil
}

func (c *reusedCodec) Unmarshal(data mem.BufferSlice, _ any) error {
	if data.Len() < c.minResp {
		return fmt.Errorf("response of %d bytes, want at least %d", data.Len(), c.minResp)
	}
	return nil
}

func (*reusedCodec) Name() string { return protocodec.Name }

// receiveCounter wraps the server codec to count the buffers grpc-go hands
// each decoded inference request over in.
type receiveCounter struct {
	encoding.CodecV2
	msgs, bufs, single atomic.Int64
}

func (c *receiveCounter) Unmarshal(data mem.BufferSlice, v any) error {
	if _, ok := v.(*inferRequest); ok {
		c.msgs.Add(1)
		c.bufs.Add(int64(len(data)))
		if len(data) == 1 {
			c.single.Add(1)
		}
	}
	return c.CodecV2.Unmarshal(data, v)
}

// BenchmarkModelInferWire sends ModelInfer through a real gRPC server and
// core, with the identity backend, over an in-memory connection, from a
// client whose own per-call allocations do not grow with the tensor. It
// also reports how many buffers grpc-go hands a request over in
// (recv-bufs/op) and the share of requests that come in one (single-%).
func BenchmarkModelInferWire(b *testing.B) {
	for _, v := range codecVariants {
		for _, n := range wireSizes {
			b.Run(fmt.Sprintf("codec=%s/size=%s", v.name, sizeName(n)), func(b *testing.B) {
				benchInferWire(b, n, &receiveCounter{CodecV2: v.codec()})
			})
		}
	}
}

// BenchmarkModelInferFrames is BenchmarkModelInferWire with the front end's
// codec and, as the transport's buffer pool, framePool (what New installs)
// or grpc-go's default pool.
func BenchmarkModelInferFrames(b *testing.B) {
	for _, v := range []struct {
		name string
		pool func() mem.BufferPool
	}{{"grpc", mem.DefaultBufferPool}, {"nereid", func() mem.BufferPool { return newFramePool() }}} {
		for _, n := range append(slices.Clone(wireSizes), 16<<20) {
			b.Run(fmt.Sprintf("frames=%s/size=%s", v.name, sizeName(n)), func(b *testing.B) {
				benchInferWire(b, n, &receiveCounter{CodecV2: newCodec(nil)}, experimental.BufferPool(v.pool()))
			})
		}
	}
}

// benchInferWire runs ModelInfer with a raw tensor of n bytes on a server
// whose codec is counter, with the extra options.
func benchInferWire(b *testing.B, n int, counter *receiveCounter, extra ...grpc.ServerOption) {
	c := benchServer(b, identityCore(b), append([]grpc.ServerOption{grpc.ForceServerCodecV2(counter)}, extra...)...)
	wire := identityWire(b, n)
	call := grpc.ForceCodecV2(&reusedCodec{wire: wire, minResp: n})
	var req, resp inferencepb.ModelInferRequest // placeholders: the codec ignores them
	ctx := context.Background()
	// The first call connects, which b.Loop leaves out.
	if err := c.Invoke(ctx, inferencepb.GRPCInferenceService_ModelInfer_FullMethodName, &req, &resp, call); err != nil {
		b.Fatal(err)
	}
	counter.msgs.Store(0)
	counter.bufs.Store(0)
	counter.single.Store(0)
	b.SetBytes(int64(n))
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Invoke(ctx, inferencepb.GRPCInferenceService_ModelInfer_FullMethodName, &req, &resp, call); err != nil {
			b.Fatal(err)
		}
	}
	if m := counter.msgs.Load(); m > 0 {
		b.ReportMetric(float64(counter.bufs.Load())/float64(m), "recv-bufs/op")
		b.ReportMetric(100*float64(counter.single.Load())/float64(m), "single-%")
	}
}

// BenchmarkInferCodec is the server's share of BenchmarkModelInferWire
// without the transport: decode of a request received in 16 KiB frames,
// conversion, identity, conversion back and encode, as the handler and
// grpc-go call them.
func BenchmarkInferCodec(b *testing.B) {
	for _, v := range codecVariants {
		for _, n := range wireSizes {
			b.Run(fmt.Sprintf("codec=%s/size=%s", v.name, sizeName(n)), func(b *testing.B) {
				c := v.codec()
				wire := identityWire(b, n)
				var frames mem.BufferSlice // as the transport hands them over
				for rest := wire; len(rest) > 0; {
					k := min(len(rest), 16<<10)
					frames = append(frames, mem.SliceBuffer(rest[:k]))
					rest = rest[k:]
				}
				b.SetBytes(int64(n))
				b.ReportAllocs()
				for b.Loop() {
					in := newInferRequest()
					if err := c.Unmarshal(frames, in); err != nil {
						b.Fatal(err)
					}
					req, err := decodeRequest(in.ModelInferRequest)
					if err != nil {
						b.Fatal(err)
					}
					out, err := c.Marshal(in.respond(encodeResponse(in.ModelInferRequest, identity(req))))
					if err != nil {
						b.Fatal(err)
					}
					out.Free()
				}
			})
		}
	}
}

func sizeName(n int) string {
	if n >= 1<<20 {
		return strconv.Itoa(n>>20) + "MiB"
	}
	return strconv.Itoa(n>>10) + "KiB"
}

// benchServer serves core on an in-memory listener and returns a client
// connection to it.
func benchServer(b *testing.B, core Core, extra ...grpc.ServerOption) *grpc.ClientConn {
	ln := bufconn.Listen(4 << 20)
	srv := New(core, Options{ServerOptions: extra})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)),
	)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-served
	})
	return conn
}
