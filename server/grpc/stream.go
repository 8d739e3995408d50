package grpcfront

import (
	"context"
	"errors"
	"io"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// metaGRPCError is the client metadata key with which a stream asks to be
// ended with a gRPC status on the first error instead of in-band errors.
const metaGRPCError = "triton_grpc_error"

// inferenceServiceDesc is the generated GRPCInferenceService description
// with the handlers of ModelInfer and ModelStreamInfer replaced by ones that
// decode into an inferRequest, so that the codec can let raw_input_contents
// alias the received bytes and the handler knows when to release them.
func inferenceServiceDesc() *grpc.ServiceDesc {
	desc := inferencepb.GRPCInferenceService_ServiceDesc
	desc.Methods = slices.Clone(desc.Methods)
	desc.Streams = slices.Clone(desc.Streams)
	replaced := 0
	for i := range desc.Methods {
		if desc.Methods[i].MethodName == "ModelInfer" {
			desc.Methods[i].Handler = modelInferHandler
			replaced++
		}
	}
	for i := range desc.Streams {
		if desc.Streams[i].StreamName == "ModelStreamInfer" {
			desc.Streams[i].Handler = modelStreamInferHandler
			replaced++
		}
	}
	if replaced != 2 {
		panic("grpcfront: GRPCInferenceService has no ModelInfer or ModelStreamInfer to replace")
	}
	return &desc
}

// modelInferHandler is the generated ModelInfer handler, decoding into an
// inferRequest. A successful response takes over the received bytes (its
// outputs may alias them) and the codec releases them once it is marshalled;
// otherwise they are released here, when the handler is done with them.
func modelInferHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) { //nolint:revive // grpc.MethodHandler's signature
	in := newInferRequest()
	if err := dec(in); err != nil {
		in.release()
		return nil, err
	}
	impl := srv.(inferencepb.GRPCInferenceServiceServer)
	var resp any
	var err error
	if interceptor == nil {
		resp, err = impl.ModelInfer(ctx, in.ModelInferRequest)
	} else {
		info := &grpc.UnaryServerInfo{Server: srv, FullMethod: inferencepb.GRPCInferenceService_ModelInfer_FullMethodName}
		resp, err = interceptor(ctx, in.ModelInferRequest, info, func(ctx context.Context, req any) (any, error) {
			return impl.ModelInfer(ctx, req.(*inferencepb.ModelInferRequest))
		})
	}
	out, ok := resp.(*inferencepb.ModelInferResponse)
	if err != nil || !ok || out == nil {
		in.release()
		return resp, err
	}
	return in.respond(out), nil
}

func modelStreamInferHandler(srv any, stream grpc.ServerStream) error {
	return srv.(*service).modelStreamInfer(stream)
}

// ModelInfer runs one request. Decoupled models are refused by the core.
func (s *service) ModelInfer(ctx context.Context, in *inferencepb.ModelInferRequest) (*inferencepb.ModelInferResponse, error) {
	arrival := time.Now()
	req, err := decodeRequest(in)
	if err == nil {
		req.Arrival = arrival
		var resp *inference.Response
		if resp, err = s.inferTraced(ctx, req, arrival); err == nil {
			return encodeResponse(in, resp), nil
		}
	}
	s.logFailure("ModelInfer", in, err)
	return nil, toStatus(err)
}

// pendingResponse is the answer to one stream request, ready once done is
// closed.
type pendingResponse struct {
	done   chan struct{}
	in     *inferRequest // its received bytes are released once resp is sent or dropped
	resp   *inferencepb.ModelStreamInferResponse
	err    error  // the failure behind an in-band error response
	seqKey string // the request's sequence, "" when it has none
}

// ModelStreamInfer serves a bidirectional stream. Requests run concurrently,
// at most maxInFlight at a time, and every request gets exactly one response
// carrying triton_final_response = true. Responses are written in request
// order, which is what Triton does for models that are not decoupled, by this
// goroutine alone (gRPC allows one writer). Errors are reported in-band (an
// error_message and an infer_response holding only the request id) and the
// stream stays open, unless the client sent the metadata triton_grpc_error:
// true, in which case the first error ends the stream with its status.
//
// A reader goroutine feeds requests in; it ends on the client's half-close,
// or when the RPC ends (gRPC then fails its pending Recv). Every inference
// runs under a context cancelled when the RPC returns or the client cancels,
// and the RPC does not return before they have all finished.
//
// Each request's received bytes, which its inputs alias, are released when
// its response has been marshalled (the codec does it, see codec.go) or,
// when the response is not sent, once its inference has finished.
func (s *service) ModelStreamInfer(stream grpc.BidiStreamingServer[inferencepb.ModelInferRequest, inferencepb.ModelStreamInferResponse]) error {
	return s.modelStreamInfer(stream)
}

func (s *service) modelStreamInfer(stream grpc.ServerStream) error {
	ctx, cancel := context.WithCancel(stream.Context())
	var workers sync.WaitGroup
	var queue []*pendingResponse // in request order
	defer func() {
		cancel()
		workers.Wait()
		for _, p := range queue {
			p.in.release()
		}
	}()
	strict := grpcErrorRequested(ctx)

	requests := make(chan *inferRequest)
	readErr := make(chan error, 1)
	go func() {
		for {
			in := newInferRequest()
			if err := stream.RecvMsg(in); err != nil {
				in.release()
				readErr <- err
				return
			}
			select {
			case requests <- in:
			case <-ctx.Done():
				in.release()
				return
			}
		}
	}()

	// The requests of one sequence run one after the other in stream
	// order, as the sequence batcher needs them; lastOfSeq holds the
	// latest request of each sequence with one in flight.
	lastOfSeq := map[string]*pendingResponse{}
	reading := true
	for {
		if !reading && len(queue) == 0 {
			return nil
		}
		var next <-chan *inferRequest
		if reading && len(queue) < s.maxInFlight {
			next = requests
		}
		var head <-chan struct{}
		if len(queue) > 0 {
			head = queue[0].done
		}

		select {
		case in := <-next:
			p := &pendingResponse{done: make(chan struct{}), in: in, seqKey: sequenceKey(in.ModelInferRequest)}
			queue = append(queue, p)
			var prev <-chan struct{}
			if p.seqKey != "" {
				if q := lastOfSeq[p.seqKey]; q != nil {
					prev = q.done
				}
				lastOfSeq[p.seqKey] = p
			}
			arrival := time.Now()
			workers.Add(1)
			go func() {
				defer workers.Done()
				defer close(p.done)
				if prev != nil {
					select {
					case <-prev:
					case <-ctx.Done():
					}
				}
				p.resp, p.err = s.streamOne(ctx, in.ModelInferRequest, arrival)
			}()

		case <-head:
			p := queue[0]
			queue[0] = nil
			queue = queue[1:]
			if p.seqKey != "" && lastOfSeq[p.seqKey] == p {
				delete(lastOfSeq, p.seqKey)
			}
			if p.err != nil && strict {
				p.in.release()
				return toStatus(p.err)
			}
			if err := stream.SendMsg(p.in.streamRespond(p.resp)); err != nil {
				return err
			}

		case err := <-readErr:
			// The reader hands over every request before it reports the
			// end of the stream, so nothing read is lost here.
			if errors.Is(err, io.EOF) {
				reading = false
				continue
			}
			return err

		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// sequenceKey names the sequence a stream request belongs to, or "".
func sequenceKey(in *inferencepb.ModelInferRequest) string {
	switch v := in.GetParameters()["sequence_id"].GetParameterChoice().(type) {
	case *inferencepb.InferParameter_Int64Param:
		if v.Int64Param != 0 {
			return "i" + strconv.FormatInt(v.Int64Param, 10)
		}
	case *inferencepb.InferParameter_StringParam:
		if v.StringParam != "" {
			return "s" + v.StringParam
		}
	}
	return ""
}

// streamOne runs one stream request and returns its response; on failure the
// response is the in-band error and err the failure.
func (s *service) streamOne(ctx context.Context, in *inferencepb.ModelInferRequest, arrival time.Time) (out *inferencepb.ModelStreamInferResponse, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error().Interface("panic", r).Bytes("stack", debug.Stack()).Msg("panic in stream inference")
			err = inference.Internal("internal error in ModelStreamInfer: %v", r)
			out = streamError(in, err)
		}
	}()

	req, err := decodeRequest(in)
	if err == nil {
		req.Arrival = arrival
		var resp *inference.Response
		if resp, err = s.inferTraced(ctx, req, arrival); err == nil {
			return streamResponse(encodeResponse(in, resp)), nil
		}
	}
	s.logFailure("ModelStreamInfer", in, err)
	return streamError(in, err), err
}

// streamResponse wraps a successful response; it is always the final one for
// its request.
func streamResponse(ir *inferencepb.ModelInferResponse) *inferencepb.ModelStreamInferResponse {
	if ir.Parameters == nil {
		ir.Parameters = make(map[string]*inferencepb.InferParameter, 1)
	}
	ir.Parameters[paramFinalResponse] = &inferencepb.InferParameter{
		ParameterChoice: &inferencepb.InferParameter_BoolParam{BoolParam: true},
	}
	return &inferencepb.ModelStreamInferResponse{InferResponse: ir}
}

// streamError is Triton's in-band error: the message, and an infer_response
// with nothing but the request id so the client can tell which request
// failed.
func streamError(in *inferencepb.ModelInferRequest, err error) *inferencepb.ModelStreamInferResponse {
	msg := err.Error()
	if st, ok := status.FromError(toStatus(err)); ok {
		msg = st.Message()
	}
	return &inferencepb.ModelStreamInferResponse{
		ErrorMessage:  msg,
		InferResponse: &inferencepb.ModelInferResponse{Id: in.GetId()},
	}
}

func (s *service) logFailure(rpc string, in *inferencepb.ModelInferRequest, err error) {
	s.log.Debug().Str("rpc", rpc).Str("model", in.GetModelName()).Str("request_id", in.GetId()).Err(err).Msg("infer failed")
}

// grpcErrorRequested reports whether the client asked, with metadata
// triton_grpc_error: true, for errors to end the stream.
func grpcErrorRequested(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get(metaGRPCError) {
		if strings.EqualFold(strings.TrimSpace(v), "true") {
			return true
		}
	}
	return false
}
