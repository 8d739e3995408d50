package grpcfront

import (
	"bytes"
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/server/restricted"
)

// serverPools are the trackingPools of a test server: its transport's, from
// which grpc-go reads frames (a message received in one frame is aliased
// there), and its codec's (a message received in several is copied there).
type serverPools struct{ transport, codec *trackingPool }

func newServerPools() serverPools {
	return serverPools{transport: newTrackingPool(), codec: newTrackingPool()}
}

func (p serverPools) holds(d []byte) bool { return p.transport.holds(d) || p.codec.holds(d) }

// startTracked serves core like start, with every buffer of the server from
// pools, which poison what is released: a response written from released
// bytes comes out wrong. After the server has shut down, the test fails if
// a buffer was released twice or if one was never released, except, when
// framesDropped, the transport's: grpc-go does not release the frames it
// had read for a stream that ended before it read them (they are only
// garbage).
func startTracked(t *testing.T, pools serverPools, core Core, opts Options, framesDropped bool) clients {
	// Registered before start's cleanup, so it runs after the shutdown.
	t.Cleanup(func() {
		pools.codec.check(t, true)
		pools.transport.check(t, !framesDropped)
	})
	opts.ServerOptions = append(opts.ServerOptions, experimental.BufferPool(pools.transport), grpc.ForceServerCodecV2(newCodec(pools.codec)))
	return start(t, core, opts)
}

// aliasingCore is the identity fakeCore that also fails the test unless
// every input of more than a KiB aliases the received bytes, still held.
// (grpc-go copies an HTTP/2 frame of a KiB or less into memory of its own
// rather than the pool's, which the codec aliases all the same.)
func aliasingCore(t *testing.T, pools serverPools) *fakeCore {
	return &fakeCore{infer: func(_ context.Context, req *inference.Request) (*inference.Response, error) {
		for _, in := range req.Inputs {
			if len(in.Data) > 1024 && !pools.holds(in.Data) {
				t.Errorf("input %s of request %s is a copy or released", in.Name, req.ID)
			}
		}
		return identity(req), nil
	}}
}

// tensorRequest is a request with one UINT8 input per payload, raw.
func tensorRequest(id string, payloads ...[]byte) *inferencepb.ModelInferRequest {
	req := &inferencepb.ModelInferRequest{ModelName: "m", Id: id}
	for i, b := range payloads {
		req.Inputs = append(req.Inputs, input("IN"+strconv.Itoa(i), "UINT8", int64(len(b))))
		req.RawInputContents = append(req.RawInputContents, b)
	}
	return req
}

// checkEcho fails unless resp carries the payloads back in order.
func checkEcho(t *testing.T, resp *inferencepb.ModelInferResponse, id string, payloads ...[]byte) {
	t.Helper()
	if resp.GetId() != id {
		t.Errorf("response id %q, want %q", resp.GetId(), id)
	}
	if len(resp.GetRawOutputContents()) != len(payloads) {
		t.Fatalf("request %s: %d raw outputs, want %d", id, len(resp.GetRawOutputContents()), len(payloads))
	}
	for i, b := range payloads {
		if !bytes.Equal(resp.RawOutputContents[i], b) {
			t.Errorf("request %s: output %d (%d bytes) differs from its input (%d bytes)", id, i, len(resp.RawOutputContents[i]), len(b))
		}
	}
}

func TestModelInferLargeInputs(t *testing.T) {
	pools := newServerPools()
	c := startTracked(t, pools, aliasingCore(t, pools), Options{}, false)
	payloads := [][]byte{pattern(1, 4<<20+3), pattern(2, 100), {}, pattern(3, 70_000), pattern(4, 3000)}
	resp, err := c.infer.ModelInfer(testCtx(t), tensorRequest("big", payloads...))
	if err != nil {
		t.Fatal(err)
	}
	checkEcho(t, resp, "big", payloads...)
}

func TestModelStreamInferLargeInputs(t *testing.T) {
	pools := newServerPools()
	c := startTracked(t, pools, aliasingCore(t, pools), Options{}, false)
	s, err := c.infer.ModelStreamInfer(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	sizes := []int{1 << 20, 10, 4000, 3 << 20, 0, 65_536}
	go func() { // while the responses are read, as flow control needs
		for i, n := range sizes {
			if err := s.Send(tensorRequest(strconv.Itoa(i), pattern(i, n), pattern(i+100, n/3))); err != nil {
				return // Recv reports it
			}
		}
		_ = s.CloseSend()
	}()
	resps, err := recvAll(t, s)
	if err != nil {
		t.Fatal(err)
	}
	if len(resps) != len(sizes) {
		t.Fatalf("%d responses, want %d", len(resps), len(sizes))
	}
	for i, n := range sizes {
		if msg := resps[i].GetErrorMessage(); msg != "" {
			t.Fatalf("response %d: %s", i, msg)
		}
		checkEcho(t, resps[i].GetInferResponse(), strconv.Itoa(i), pattern(i, n), pattern(i+100, n/3))
	}
}

// barrier lets callers through once n of them are waiting, so that that
// many requests hold their received bytes at the same time.
type barrier struct {
	mu      sync.Mutex // guards waiting
	waiting int
	n       int
	open    chan struct{}
}

func newBarrier(n int) *barrier { return &barrier{n: n, open: make(chan struct{})} }

func (b *barrier) wait(ctx context.Context) error {
	b.mu.Lock()
	b.waiting++
	if b.waiting == b.n {
		close(b.open)
	}
	b.mu.Unlock()
	select {
	case <-b.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// concurrentCore is aliasingCore that holds every request until n are in
// the core.
func concurrentCore(t *testing.T, pools serverPools, n int) *fakeCore {
	b := newBarrier(n)
	inner := aliasingCore(t, pools)
	return &fakeCore{infer: func(ctx context.Context, req *inference.Request) (*inference.Response, error) {
		if err := b.wait(ctx); err != nil {
			return nil, err
		}
		return inner.infer(ctx, req)
	}}
}

// Requests in flight together each get their own bytes back.
func TestModelInferConcurrentNoAliasing(t *testing.T) {
	const n = 64
	pools := newServerPools()
	c := startTracked(t, pools, concurrentCore(t, pools, n), Options{}, false)
	ctx := testCtx(t)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			id := strconv.Itoa(i)
			a, b := pattern(i, 60_000+i), pattern(i+1000, 300+i)
			resp, err := c.infer.ModelInfer(ctx, tensorRequest(id, a, b))
			if err != nil {
				t.Error(err)
				return
			}
			checkEcho(t, resp, id, a, b)
		})
	}
	wg.Wait()
}

func TestModelStreamInferConcurrentNoAliasing(t *testing.T) {
	const n = 64
	pools := newServerPools()
	c := startTracked(t, pools, concurrentCore(t, pools, n), Options{MaxStreamInFlight: n}, false)
	s, err := c.infer.ModelStreamInfer(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for i := range n {
			if err := s.Send(tensorRequest(strconv.Itoa(i), pattern(i, 20_000+i))); err != nil {
				return // Recv reports it
			}
		}
		_ = s.CloseSend()
	}()
	resps, err := recvAll(t, s)
	if err != nil {
		t.Fatal(err)
	}
	if len(resps) != n {
		t.Fatalf("%d responses, want %d", len(resps), n)
	}
	for i, r := range resps {
		checkEcho(t, r.GetInferResponse(), strconv.Itoa(i), pattern(i, 20_000+i))
	}
}

// Requests that fail, or never reach the service, release their received
// bytes all the same (startTracked checks).
func TestReceivedBytesReleasedOnFailure(t *testing.T) {
	rules := restricted.Rules{}
	if err := rules.AddGRPC("inference:infer-key=secret"); err != nil {
		t.Fatal(err)
	}
	core := &fakeCore{infer: func(context.Context, *inference.Request) (*inference.Response, error) {
		return nil, inference.InvalidArg("no")
	}}
	// Streams end here with requests still unread.
	c := startTracked(t, newServerPools(), core, Options{Restricted: rules}, true)
	ctx := testCtx(t)
	big := tensorRequest("x", pattern(1, 200_000))

	// Refused by an interceptor before the service runs.
	_, err := c.infer.ModelInfer(ctx, big)
	wantCode(t, err, codes.Unavailable, "infer-key")
	s, err := c.infer.ModelStreamInfer(ctx)
	if err == nil {
		_ = s.Send(big) // io.EOF once the server has refused the stream
		_, err = s.Recv()
	}
	wantCode(t, err, codes.Unavailable, "infer-key")

	// Failed by the core, unary, streamed, and streamed with
	// triton_grpc_error, which ends the stream with requests in flight.
	authed := metadata.AppendToOutgoingContext(ctx, "triton-grpc-protocol-infer-key", "secret")
	_, err = c.infer.ModelInfer(authed, big)
	wantCode(t, err, codes.InvalidArgument, "no")
	for _, strict := range []bool{false, true} {
		sctx := authed
		if strict {
			sctx = metadata.AppendToOutgoingContext(authed, metaGRPCError, "true")
		}
		s, err := c.infer.ModelStreamInfer(sctx)
		if err != nil {
			t.Fatal(err)
		}
		for range 5 {
			if err := s.Send(big); err != nil {
				break
			}
		}
		_ = s.CloseSend()
		if _, err := recvAll(t, s); strict {
			wantCode(t, err, codes.InvalidArgument, "no")
		}
	}

	// Two messages on a unary RPC: grpc-go decodes both, then refuses the
	// call before the handler runs.
	cs, err := c.conn.NewStream(authed, &grpc.StreamDesc{ClientStreams: true}, inferencepb.GRPCInferenceService_ModelInfer_FullMethodName)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := cs.SendMsg(big); err != nil {
			t.Fatal(err)
		}
	}
	if err := cs.CloseSend(); err != nil {
		t.Fatal(err)
	}
	wantCode(t, cs.RecvMsg(new(inferencepb.ModelInferResponse)), codes.Internal, "cardinality violation")

	// A message that does not parse.
	bad := []byte{0x3a, 0x05, 1} // a raw input of 5 bytes that has 1
	_, err = c.infer.ModelInfer(authed, &inferencepb.ModelInferRequest{}, grpc.ForceCodecV2(rawCodec{bad}))
	wantCode(t, err, codes.Internal, "unmarshal")
}

// rawCodec is a client codec that sends wire as the request, whatever the
// message, and decodes nothing.
type rawCodec struct{ wire []byte }

func (c rawCodec) Marshal(any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(c.wire)}, nil
}
func (rawCodec) Unmarshal(mem.BufferSlice, any) error { return nil }
func (rawCodec) Name() string                         { return "proto" }

// The server codec is this server's alone: the process-wide "proto" codec
// stays grpc-go's.
func TestCodecNotGlobal(t *testing.T) {
	srv := New(&fakeCore{}, Options{})
	defer srv.grpc.Stop() // New starts grpc-go's stream workers
	if _, ok := encoding.GetCodecV2("proto").(*codec); ok {
		t.Fatal("New replaced the process-wide proto codec")
	}
	if got := newCodec(nil).Name(); got != "proto" {
		t.Fatalf("codec name %q", got)
	}
}

// A unary response whose outputs live in backend memory (Release set) is
// written from that memory, not a copy, and released once, after gRPC has
// written it: the backend poisons its bytes on release, so a response sent
// from released memory would come out wrong.
func TestUnaryOutputsReleasedAfterWrite(t *testing.T) {
	var mu sync.Mutex
	releases := 0
	core := &fakeCore{infer: func(_ context.Context, req *inference.Request) (*inference.Response, error) {
		resp := identity(req)
		owned := make([][]byte, len(resp.Outputs))
		for i := range resp.Outputs {
			owned[i] = bytes.Clone(resp.Outputs[i].Data)
			resp.Outputs[i].Data = owned[i]
		}
		resp.Release = func() {
			mu.Lock()
			releases++
			mu.Unlock()
			for _, b := range owned {
				for j := range b {
					b[j] = 0xEE
				}
			}
		}
		return resp, nil
	}}
	c := start(t, core, Options{})
	for round := range 20 {
		small, mid, big := bytes.Repeat([]byte{1}, 100), bytes.Repeat([]byte{2}, 600), bytes.Repeat([]byte{3}, 64<<10)
		id := strconv.Itoa(round)
		resp, err := c.infer.ModelInfer(context.Background(), tensorRequest(id, small, mid, big))
		if err != nil {
			t.Fatal(err)
		}
		checkEcho(t, resp, id, small, mid, big)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := releases
		mu.Unlock()
		if n == 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 20 responses were released", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
