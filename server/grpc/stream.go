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
	if in.refused != nil {
		return nil, toStatus(in.refused)
	}
	impl := srv.(inferencepb.GRPCInferenceServiceServer)
	if svc, ok := srv.(*service); ok {
		compressResponse(ctx, svc.compressor)
	}
	// ModelInfer leaves a response's backend memory to the codec through
	// this slot (outputsReleasedLater) instead of copying it.
	var release func()
	ctx = context.WithValue(ctx, releaseSlotKey{}, &release)
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
		if release != nil {
			release()
		}
		in.release()
		return resp, err
	}
	r := in.respond(out)
	r.release = release
	return r, nil
}

// releaseSlotKey keys the context value through which ModelInfer hands a
// response's Release to modelInferHandler.
type releaseSlotKey struct{}

// outputsReleasedLater reports whether the response's outputs may stay in
// backend memory until gRPC has written them: ModelInfer was called by
// modelInferHandler, whose codec releases them then. Otherwise they are
// copied (ownedOutputs).
func outputsReleasedLater(ctx context.Context, resp *inference.Response) bool {
	if resp.Release == nil {
		return false
	}
	slot, ok := ctx.Value(releaseSlotKey{}).(*func())
	if !ok || *slot != nil {
		return false
	}
	*slot = resp.Done
	return true
}

func modelStreamInferHandler(srv any, stream grpc.ServerStream) error {
	return srv.(*service).modelStreamInfer(stream)
}

// ModelInfer runs one request. A decoupled model is refused, with Triton's
// status and text.
func (s *service) ModelInfer(ctx context.Context, in *inferencepb.ModelInferRequest) (*inferencepb.ModelInferResponse, error) {
	arrival := time.Now()
	req, err := s.decodeRequest(ctx, in)
	if err == nil {
		err = s.forwardMetadata(ctx, req)
	}
	if err == nil {
		req.Arrival = arrival
		var resp *inference.Response
		if resp, err = s.inferTraced(ctx, req, arrival); err == nil {
			if outputsReleasedLater(ctx, resp) {
				return encodeResponse(in, resp), nil
			}
			return encodeResponse(in, ownedOutputs(resp)), nil
		}
	}
	if errors.Is(err, inference.ErrDecoupled) {
		err = inference.Unsupported("ModelInfer RPC doesn't support models with decoupled transaction policy")
	}
	s.logFailure("ModelInfer", in, err)
	return nil, toStatus(err)
}

// ownedOutputs makes a response whose backend frees its output memory
// (Release) safe to hand to gRPC, which writes the bytes after the handler
// has returned: the outputs are copied and the backend's memory released.
func ownedOutputs(resp *inference.Response) *inference.Response {
	if resp == nil || resp.Release == nil {
		return resp
	}
	outs := slices.Clone(resp.Outputs)
	for i := range outs {
		outs[i].Data = slices.Clone(outs[i].Data)
	}
	resp.Done()
	resp.Outputs = outs
	return resp
}

// streamMsg is one message for the stream's writer: a response, or the
// in-band error that ends a request (err set).
type streamMsg struct {
	resp *streamInferResponse
	err  error
}

// streamEntry is one request of a stream in flight.
type streamEntry struct {
	seqKey string
	// ordered: the model is not decoupled, so its one response is
	// written in request order; the worker keeps it in msgs.
	ordered bool
	msgs    []streamMsg
	done    chan struct{} // closed when the worker has returned
}

// ModelStreamInfer serves a bidirectional stream. Requests run concurrently,
// at most maxInFlight at a time, and each gets every response its model
// sends (0..N for a decoupled model, exactly one otherwise), in order, each
// carrying triton_final_response (true on the last). As in Triton, the
// responses of models that are not decoupled are written in request order;
// a decoupled model's responses are written as they are produced, so they
// interleave with the others'. A decoupled model's final flag without a
// response is sent, as an empty response, only when the request set
// triton_enable_empty_final_response. Errors are reported in-band and the
// stream stays open, unless the client sent the metadata triton_grpc_error:
// true, in which case the first error ends the stream with its status. An
// in-band error is an error_message with an infer_response that says which
// request it ends (see streamError): the request id alone when the request
// was refused before its model ran, the model name and
// triton_final_response true as well once the model had run, whether or
// not the empty final response was asked for, as Triton sends them.
//
// Goroutines: a reader feeds requests in; it takes an in-flight slot before
// it reads the next message, and a slot is given back only once its
// request's last message is written, so a stream with maxInFlight requests
// outstanding stops reading (and gRPC's flow control holds the client
// back). One worker per request runs it through the core. A decoupled
// model's responses go through a bounded queue to this goroutine, gRPC's
// one writer: a client that does not read holds the workers back, and with
// them the backends, so the server buffers at most maxInFlight requests and
// the queue. Every inference runs under a context cancelled when the RPC
// returns or the client cancels, and the RPC does not return before the
// workers have all finished; the reader ends on the client's half-close, or
// when the RPC ends (gRPC then fails its Recv).
//
// The requests of one sequence run one after the other in stream order, as
// the sequence batcher needs them.
//
// Each request's received bytes, which its inputs (and an identity model's
// outputs) alias, are handed on with its final response and released once
// that is marshalled (the codec does it, see codec.go); earlier responses
// hold references of their own; a request that ends without a response
// sent releases them itself.
func (s *service) ModelStreamInfer(stream grpc.BidiStreamingServer[inferencepb.ModelInferRequest, inferencepb.ModelStreamInferResponse]) error {
	return s.modelStreamInfer(stream)
}

func (s *service) modelStreamInfer(stream grpc.ServerStream) error {
	compressResponse(stream.Context(), s.compressor)
	ctx, cancel := context.WithCancel(stream.Context())
	var workers sync.WaitGroup
	sendq := make(chan streamMsg, s.maxInFlight)
	finished := make(chan *streamEntry, s.maxInFlight) // decoupled requests whose worker returned
	slots := make(chan struct{}, s.maxInFlight)        // taken by the reader, given back per retired request
	var ordered []*streamEntry                         // requests of models that are not decoupled, in request order
	defer func() {
		cancel()
		workers.Wait()
		for _, e := range ordered {
			for _, m := range e.msgs {
				m.resp.release()
			}
		}
		for {
			select {
			case m := <-sendq:
				m.resp.release()
			default:
				return
			}
		}
	}()
	strict := grpcErrorRequested(ctx)

	requests := make(chan *inferRequest)
	readErr := make(chan error, 1)
	go func() {
		for {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
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

	// lastOfSeq holds, for each sequence with a request in flight, its
	// latest request.
	lastOfSeq := map[string]*streamEntry{}
	decoupled := map[modelKey]bool{}
	reading, active := true, 0
	retire := func(e *streamEntry) {
		active--
		<-slots
		if e.seqKey != "" && lastOfSeq[e.seqKey] == e {
			delete(lastOfSeq, e.seqKey)
		}
	}
	for {
		if !reading && active == 0 && len(sendq) == 0 {
			return nil
		}
		var next <-chan *inferRequest
		if reading {
			next = requests
		}
		var head <-chan struct{}
		if len(ordered) > 0 {
			head = ordered[0].done
		}
		select {
		case in := <-next:
			active++
			e := &streamEntry{
				seqKey:  sequenceKey(in.ModelInferRequest),
				ordered: !s.isDecoupled(ctx, in.ModelInferRequest, decoupled),
				done:    make(chan struct{}),
			}
			var prev <-chan struct{}
			if e.seqKey != "" {
				if p := lastOfSeq[e.seqKey]; p != nil {
					prev = p.done
				}
				lastOfSeq[e.seqKey] = e
			}
			if e.ordered {
				ordered = append(ordered, e)
			}
			arrival := time.Now()
			workers.Add(1)
			go func() {
				defer workers.Done()
				if prev != nil {
					select {
					case <-prev:
					case <-ctx.Done():
					}
				}
				push := func(m streamMsg) error {
					if e.ordered {
						e.msgs = append(e.msgs, m)
						return nil
					}
					select {
					case sendq <- m:
						return nil
					case <-ctx.Done():
						m.resp.release()
						return ctx.Err()
					}
				}
				s.streamOne(ctx, in, arrival, push)
				close(e.done)
				if !e.ordered {
					finished <- e
				}
			}()

		case <-head:
			e := ordered[0]
			ordered[0] = nil
			ordered = ordered[1:]
			retire(e)
			for i, m := range e.msgs {
				if m.err != nil && strict {
					for _, rest := range e.msgs[i:] {
						rest.resp.release()
					}
					return toStatus(m.err)
				}
				if err := stream.SendMsg(m.resp); err != nil {
					for _, rest := range e.msgs[i+1:] {
						rest.resp.release()
					}
					return err
				}
			}

		case m := <-sendq:
			if m.err != nil && strict {
				m.resp.release()
				return toStatus(m.err)
			}
			if err := stream.SendMsg(m.resp); err != nil {
				return err
			}

		case e := <-finished:
			retire(e)

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

// modelKey names a model version a stream request asks for.
type modelKey struct{ name, version string }

// isDecoupled reports whether the model a request names is decoupled,
// asking the core once per model version and stream. A model that cannot
// be found counts as not decoupled: its requests fail in order.
func (s *service) isDecoupled(ctx context.Context, in *inferencepb.ModelInferRequest, known map[modelKey]bool) (d bool) {
	defer func() {
		if r := recover(); r != nil {
			// The request's own run reports the core's failure.
			s.log.Error().Interface("panic", r).Msg("panic in the model configuration lookup of a stream request")
			d = false
		}
	}()
	k := modelKey{in.GetModelName(), in.GetModelVersion()}
	d, ok := known[k]
	if !ok {
		var cfg *inferencepb.ModelConfig
		var err error
		cfg, err = s.core.ModelConfig(ctx, k.name, k.version)
		d = err == nil && cfg.GetModelTransactionPolicy().GetDecoupled()
		if err == nil {
			known[k] = d
		}
	}
	return d
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

// streamOne runs one stream request and pushes its responses, or its
// in-band error, for the writer.
func (s *service) streamOne(ctx context.Context, in *inferRequest, arrival time.Time, push func(streamMsg) error) {
	// model is the name for the error's infer_response once the model has
	// run, "" before.
	fail := func(err error, model string) {
		s.logFailure("ModelStreamInfer", in.ModelInferRequest, err)
		msg := in.streamRespond(streamError(in.ModelInferRequest, err, model))
		_ = push(streamMsg{resp: msg, err: err})
	}
	defer func() {
		if r := recover(); r != nil {
			s.log.Error().Interface("panic", r).Bytes("stack", debug.Stack()).Msg("panic in stream inference")
			fail(inference.Internal("internal error in ModelStreamInfer: %v", r), "")
		}
	}()

	if in.refused != nil {
		fail(in.refused, "")
		return
	}
	req, err := s.decodeRequest(ctx, in.ModelInferRequest)
	if err == nil {
		err = s.forwardMetadata(ctx, req)
	}
	if err != nil {
		fail(err, "")
		return
	}
	req.Arrival = arrival
	emptyFinal := false
	if p := in.GetParameters()[paramEnableEmptyFinal]; p != nil {
		emptyFinal = p.GetBoolParam()
	}
	var last *inference.Response
	out := func(resp *inference.Response, final bool) error {
		var ir *inferencepb.ModelInferResponse
		if resp == nil {
			if !emptyFinal {
				return nil
			}
			ir = &inferencepb.ModelInferResponse{Id: req.ID, ModelName: req.ModelName, ModelVersion: req.ModelVersion}
			if last != nil {
				ir.ModelName, ir.ModelVersion = last.ModelName, last.ModelVersion
			}
		} else {
			last = resp
			ir = encodeResponse(in.ModelInferRequest, ownedOutputs(resp))
		}
		var msg *streamInferResponse
		if final {
			msg = in.streamRespond(streamResponse(ir, true))
		} else {
			msg = in.streamShare(streamResponse(ir, false))
		}
		return push(streamMsg{resp: msg})
	}
	if err := s.inferStreamTraced(ctx, req, arrival, out); err != nil {
		model := ""
		if req.Timing.Executed() {
			model = req.ModelName
			if last != nil && last.ModelName != "" {
				model = last.ModelName
			}
		}
		fail(err, model)
		return
	}
	in.release() // nothing took the received bytes (no response was sent)
}

// streamResponse wraps a response with its triton_final_response flag.
func streamResponse(ir *inferencepb.ModelInferResponse, final bool) *inferencepb.ModelStreamInferResponse {
	if ir.Parameters == nil {
		ir.Parameters = make(map[string]*inferencepb.InferParameter, 1)
	}
	ir.Parameters[paramFinalResponse] = &inferencepb.InferParameter{
		ParameterChoice: &inferencepb.InferParameter_BoolParam{BoolParam: final},
	}
	return &inferencepb.ModelStreamInferResponse{InferResponse: ir}
}

// streamError is Triton's in-band error: the message, and an
// infer_response that names the request it ends. A request refused before
// its model ran (a bad request, an unknown model, a scheduler that would
// not take it) gets the request id alone; one that failed once its model
// had run (model is its name) gets the model name and
// triton_final_response true as well, with no model version, as Triton
// 2.51 answers. The error always ends the request: a client that waits for
// the final flag stops there.
func streamError(in *inferencepb.ModelInferRequest, err error, model string) *inferencepb.ModelStreamInferResponse {
	msg := err.Error()
	if st, ok := status.FromError(toStatus(err)); ok {
		msg = st.Message()
	}
	if model == "" {
		return &inferencepb.ModelStreamInferResponse{
			ErrorMessage:  msg,
			InferResponse: &inferencepb.ModelInferResponse{Id: in.GetId()},
		}
	}
	r := streamResponse(&inferencepb.ModelInferResponse{Id: in.GetId(), ModelName: model}, true)
	r.ErrorMessage = msg
	return r
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
