package grpcfront

import (
	"context"
	"errors"
	"io"
	"runtime/debug"
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
func (s *service) ModelStreamInfer(stream grpc.BidiStreamingServer[inferencepb.ModelInferRequest, inferencepb.ModelStreamInferResponse]) error {
	ctx, cancel := context.WithCancel(stream.Context())
	var workers sync.WaitGroup
	defer func() {
		cancel()
		workers.Wait()
	}()
	strict := grpcErrorRequested(ctx)

	requests := make(chan *inferencepb.ModelInferRequest)
	readErr := make(chan error, 1)
	go func() {
		for {
			in, err := stream.Recv()
			if err != nil {
				readErr <- err
				return
			}
			select {
			case requests <- in:
			case <-ctx.Done():
				return
			}
		}
	}()

	var queue []*pendingResponse // in request order
	// The requests of one sequence run one after the other in stream
	// order, as the sequence batcher needs them; lastOfSeq holds the
	// latest request of each sequence with one in flight.
	lastOfSeq := map[string]*pendingResponse{}
	reading := true
	for {
		if !reading && len(queue) == 0 {
			return nil
		}
		var next <-chan *inferencepb.ModelInferRequest
		if reading && len(queue) < s.maxInFlight {
			next = requests
		}
		var head <-chan struct{}
		if len(queue) > 0 {
			head = queue[0].done
		}

		select {
		case in := <-next:
			p := &pendingResponse{done: make(chan struct{}), seqKey: sequenceKey(in)}
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
				p.resp, p.err = s.streamOne(ctx, in, arrival)
			}()

		case <-head:
			p := queue[0]
			queue[0] = nil
			queue = queue[1:]
			if p.seqKey != "" && lastOfSeq[p.seqKey] == p {
				delete(lastOfSeq, p.seqKey)
			}
			if p.err != nil && strict {
				return toStatus(p.err)
			}
			if err := stream.Send(p.resp); err != nil {
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
