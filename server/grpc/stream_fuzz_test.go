package grpcfront

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/nereid-project/nereid/proto/inferencepb"
)

// bytesCodec sends and receives messages as the bytes they are, so that a
// client can put on a stream anything a hostile client could.
type bytesCodec struct{}

func (bytesCodec) Name() string { return "proto" }

func (bytesCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (bytesCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

// streamFrames splits fuzz input into the messages of one stream: a
// uvarint length, then that many bytes (cut short at the end), at most 16.
func streamFrames(data []byte) [][]byte {
	var msgs [][]byte
	for len(data) > 0 && len(msgs) < 16 {
		n, k := binary.Uvarint(data)
		if k <= 0 {
			n, k = uint64(len(data)), 0
		}
		data = data[k:]
		n = min(n, uint64(len(data)))
		msgs = append(msgs, data[:n])
		data = data[n:]
	}
	return msgs
}

// FuzzStreamFraming sends arbitrary message sequences, optionally
// compressed, on a ModelStreamInfer stream of a real server (the codec's
// aliasing decoder, decompression, request conversion, sequence and
// decoupled handling, the in-band errors, the response encoder). Nothing
// may panic; every response is a valid ModelStreamInferResponse; a stream
// of messages that all parse is answered OK with one response per request,
// in order, carrying its id; one that does not parse ends the stream with
// an error status after at most the responses of the messages before it.
func FuzzStreamFraming(f *testing.F) {
	frame := func(msgs ...proto.Message) []byte {
		var out []byte
		for _, m := range msgs {
			b, err := proto.Marshal(m)
			if err != nil {
				f.Fatal(err)
			}
			out = binary.AppendUvarint(out, uint64(len(b)))
			out = append(out, b...)
		}
		return out
	}
	seq := func(id string, seqID int64, start, end bool) *inferencepb.ModelInferRequest {
		r := rawRequest(id, 1, 2)
		r.Parameters = map[string]*inferencepb.InferParameter{
			"sequence_id": p(seqID), "sequence_start": p(start), "sequence_end": p(end)}
		return r
	}
	for _, flags := range []byte{0, 1, 2} {
		f.Add(flags, frame(rawRequest("a", 1, 2, 3), rawRequest("b", 4)))
		f.Add(flags, frame(seq("s1", 7, true, false), seq("s2", 7, false, true), rawRequest("", 9)))
		f.Add(flags, append(frame(rawRequest("ok", 1)), 3, 0xff, 0xff, 0xff))
		f.Add(flags, frame(&inferencepb.ModelInferRequest{ModelName: "m", Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{input("X", "FP64", 3)},
			RawInputContents: [][]byte{{1, 2, 3}}}))
	}
	c := start(f, &fakeCore{}, Options{MaxStreamInFlight: 4, MaxMessageSize: 1 << 20})
	f.Fuzz(func(t *testing.T, flags byte, data []byte) {
		msgs := streamFrames(data)
		opts := []grpc.CallOption{grpc.ForceCodecV2(bytesCodec{})}
		switch flags % 3 {
		case 1:
			opts = append(opts, grpc.UseCompressor("gzip"))
		case 2:
			opts = append(opts, grpc.UseCompressor("deflate"))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		desc := &grpc.StreamDesc{StreamName: "ModelStreamInfer", ServerStreams: true, ClientStreams: true}
		cs, err := c.conn.NewStream(ctx, desc, inferencepb.GRPCInferenceService_ModelStreamInfer_FullMethodName, opts...)
		if err != nil {
			t.Fatal(err)
		}
		sendErr := error(nil)
		for i := range msgs {
			if sendErr = cs.SendMsg(&msgs[i]); sendErr != nil {
				break // the server ended the stream; RecvMsg tells why
			}
		}
		if sendErr == nil {
			_ = cs.CloseSend()
		}
		var got []*inferencepb.ModelStreamInferResponse
		for {
			var b []byte
			err = cs.RecvMsg(&b)
			if err != nil {
				break
			}
			var r inferencepb.ModelStreamInferResponse
			if uerr := proto.Unmarshal(b, &r); uerr != nil {
				t.Fatalf("response %d does not parse: %v", len(got), uerr)
			}
			got = append(got, &r)
		}
		st, _ := status.FromError(err)
		if errors.Is(err, io.EOF) {
			st = status.New(codes.OK, "")
		}
		if st.Code() == codes.Internal && strings.Contains(st.Message(), "internal error") {
			t.Fatalf("the server panicked: %v", st.Message())
		}

		// Which messages parse decides the outcome.
		ids, bad := []string(nil), -1
		for i, m := range msgs {
			var req inferencepb.ModelInferRequest
			if proto.Unmarshal(m, &req) != nil {
				bad = i
				break
			}
			ids = append(ids, req.GetId())
		}
		if bad < 0 {
			if st.Code() != codes.OK {
				t.Fatalf("%d valid messages: stream ended with %v", len(msgs), st)
			}
			if len(got) != len(ids) {
				t.Fatalf("%d requests, %d responses", len(ids), len(got))
			}
			for i, r := range got {
				if r.GetInferResponse().GetId() != ids[i] {
					t.Fatalf("response %d has id %q, request %q (error %q)", i, r.GetInferResponse().GetId(), ids[i], r.GetErrorMessage())
				}
			}
			return
		}
		if st.Code() == codes.OK || len(got) > bad {
			t.Fatalf("message %d does not parse: stream ended with %v after %d responses", bad, st, len(got))
		}
	})
}
