package grpcfront

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/nereid-project/nereid/proto/inferencepb"
)

// trackingPool is a mem.BufferPool that never reuses memory and counts: Put
// overwrites the buffer with poison, so that bytes read after their release
// come out wrong (and race under -race), and a Put of a buffer that is not
// out (a double free) is counted as an error. Its buffers have a capacity
// above grpc-go's pooling threshold so that every one is reference counted.
type trackingPool struct {
	mu     sync.Mutex         // guards the fields below
	out    map[*[]byte][]byte // the memory of each buffer out, as Get made it
	gets   int
	errors []string
}

const poison = 0xA5

func newTrackingPool() *trackingPool {
	return &trackingPool{out: map[*[]byte][]byte{}}
}

func (p *trackingPool) Get(n int) *[]byte {
	b := make([]byte, n, max(n, 2048))
	p.mu.Lock()
	defer p.mu.Unlock()
	p.out[&b] = b[:cap(b)]
	p.gets++
	return &b
}

func (p *trackingPool) Put(b *[]byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	full, ok := p.out[b]
	if !ok {
		p.errors = append(p.errors, fmt.Sprintf("Put of a buffer that is not out (freed twice?): cap %d", cap(*b)))
		return
	}
	delete(p.out, b)
	for i := range full {
		full[i] = poison
	}
}

// buffer returns a reference-counted mem.Buffer holding a copy of data.
func (p *trackingPool) buffer(data []byte) mem.Buffer {
	b := p.Get(len(data))
	copy(*b, data)
	return mem.NewBuffer(b, p)
}

// holds reports whether d lies inside a buffer that is out.
func (p *trackingPool) holds(d []byte) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	// Only the memory as Get made it is read: the holder of a buffer may
	// change the slice its pointer refers to.
	for _, full := range p.out {
		if _, ok := offsetIn(full, d); ok {
			return true
		}
	}
	return false
}

// check fails t if a buffer was freed twice or, when all is true, if one
// is still out.
func (p *trackingPool) check(t testing.TB, all bool) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.errors {
		t.Error(e)
	}
	if all && len(p.out) != 0 {
		t.Errorf("%d of %d pooled buffers never released", len(p.out), p.gets)
	}
}

// chunks splits data into buffers of the pool of size bytes (the last one
// shorter; one buffer when size is 0; at most 64), as grpc-go hands a
// message to the codec.
func chunks(p *trackingPool, data []byte, size int) mem.BufferSlice {
	if size <= 0 || size >= len(data) {
		return mem.BufferSlice{p.buffer(data)}
	}
	size = max(size, (len(data)+63)/64)
	var out mem.BufferSlice
	for len(data) > 0 {
		n := min(size, len(data))
		out = append(out, p.buffer(data[:n]))
		data = data[n:]
	}
	return out
}

// appendRawInput appends one raw_input_contents record.
func appendRawInput(b []byte, v []byte) []byte {
	b = protowire.AppendTag(b, rawInputField, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

// codecSeeds are serialized ModelInferRequests that exercise the decoder:
// raw inputs interleaved with other fields, repeated and map fields split
// across records, unknown fields, empty entries, raw_input_contents with a
// wrong wire type, and malformed messages.
func codecSeeds(t testing.TB) [][]byte {
	full, err := proto.Marshal(benchRequest())
	if err != nil {
		t.Fatal(err)
	}
	head, err := proto.Marshal(&inferencepb.ModelInferRequest{ModelName: "m", Id: "x",
		Inputs:     []*inferencepb.ModelInferRequest_InferInputTensor{input("A", "UINT8", 3)},
		Parameters: map[string]*inferencepb.InferParameter{"sequence_id": p(int64(3))}})
	if err != nil {
		t.Fatal(err)
	}
	more, err := proto.Marshal(&inferencepb.ModelInferRequest{ModelName: "n",
		Inputs:     []*inferencepb.ModelInferRequest_InferInputTensor{input("B", "UINT8", 0)},
		Parameters: map[string]*inferencepb.InferParameter{"sequence_id": p("s"), "k": p(true)}})
	if err != nil {
		t.Fatal(err)
	}
	var interleaved []byte
	interleaved = appendRawInput(interleaved, []byte{1, 2, 3})
	interleaved = append(interleaved, head...)
	interleaved = appendRawInput(interleaved, nil)
	interleaved = protowire.AppendTag(interleaved, 99, protowire.VarintType) // unknown
	interleaved = protowire.AppendVarint(interleaved, 7)
	interleaved = append(interleaved, more...)
	interleaved = appendRawInput(interleaved, bytes.Repeat([]byte{9}, 300))
	interleaved = protowire.AppendTag(interleaved, rawInputField, protowire.VarintType) // wrong wire type: unknown
	interleaved = protowire.AppendVarint(interleaved, 1)
	interleaved = protowire.AppendTag(interleaved, 100, protowire.StartGroupType)
	interleaved = protowire.AppendTag(interleaved, rawInputField, protowire.BytesType) // inside a group: unknown
	interleaved = protowire.AppendBytes(interleaved, []byte("g"))
	interleaved = protowire.AppendTag(interleaved, 100, protowire.EndGroupType)

	nonMinimalTag := append([]byte{0xba, 0x00}, protowire.AppendBytes(nil, []byte("xyz"))...) // field 7, tag in two bytes

	badUTF8 := protowire.AppendTag(nil, 1, protowire.BytesType) // model_name must be UTF-8
	badUTF8 = protowire.AppendBytes(badUTF8, []byte{0xff})
	badUTF8 = appendRawInput(badUTF8, []byte("abc"))

	return [][]byte{
		nil,
		full,
		interleaved,
		nonMinimalTag,
		badUTF8,
		appendRawInput(nil, nil),
		appendRawInput(appendRawInput(nil, []byte("a")), []byte("b")),
		interleaved[:len(interleaved)-1],                     // truncated group
		full[:len(full)-5],                                   // truncated raw input
		append(appendRawInput(nil, []byte("a")), 0x3a, 0x05), // length beyond the end
		append(appendRawInput(nil, []byte("a")), 0x0c),       // end group without start
		append(appendRawInput(nil, []byte("a")), 0x00, 0x01), // field number 0
		append(appendRawInput(nil, []byte("a")), 0x80),       // truncated varint
	}
}

// checkDecode decodes data, handed over in buffers of at most split bytes,
// through the codec and compares the result with proto.Unmarshal's; it then
// checks that the received bytes are released exactly once.
func checkDecode(t *testing.T, data []byte, split int) {
	var want inferencepb.ModelInferRequest
	wantErr := proto.Unmarshal(data, &want)

	pool := newTrackingPool()
	c := newCodec(pool)
	in := chunks(pool, data, split)
	r := newInferRequest()
	err := c.Unmarshal(in, r)
	in.Free() // as grpc-go does once Unmarshal returns
	if (err == nil) != (wantErr == nil) {
		t.Fatalf("codec error %v, proto.Unmarshal error %v", err, wantErr)
	}
	if err != nil {
		if r.buf != nil {
			t.Fatal("a failed decode holds the received bytes")
		}
		pool.check(t, true)
		return
	}
	if !proto.Equal(r.ModelInferRequest, &want) {
		t.Fatalf("codec decoded\n%v\nproto.Unmarshal\n%v", r.ModelInferRequest, &want)
	}
	aliased := false
	for i, v := range r.RawInputContents {
		if len(v) == 0 {
			continue
		}
		aliased = true
		if cap(v) != len(v) {
			t.Errorf("raw input %d has capacity %d beyond its length %d", i, cap(v), len(v))
		}
		if !pool.holds(v) {
			t.Errorf("raw input %d is a copy, not the received bytes", i)
		}
	}
	if aliased != (r.buf != nil) {
		t.Fatalf("raw inputs alias the received bytes: %v, request holds them: %v", aliased, r.buf != nil)
	}
	r.release()
	r.release() // a second release is a no-op
	pool.check(t, true)
}

func TestInferRequestCodecMatchesProto(t *testing.T) {
	for i, seed := range codecSeeds(t) {
		for _, split := range []int{0, 1, 7, 1024} {
			t.Run(fmt.Sprintf("seed%d/split%d", i, split), func(t *testing.T) { checkDecode(t, seed, split) })
		}
	}
}

// FuzzInferRequestCodec checks that the aliasing decoder accepts and
// rejects exactly what proto.Unmarshal does and decodes the same message,
// whatever the buffers the bytes arrive in.
func FuzzInferRequestCodec(f *testing.F) {
	for _, seed := range codecSeeds(f) {
		if len(seed) > 4<<10 {
			continue // large seeds slow the fuzzer down more than they find
		}
		f.Add(seed, uint16(0))
		f.Add(seed, uint16(5))
	}
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		checkDecode(t, data, int(split))
	})
}

// A plain ModelInferRequest has no owner for the received bytes: it is
// decoded the standard way, with copies.
func TestCodecPlainRequestCopies(t *testing.T) {
	pool := newTrackingPool()
	data, err := proto.Marshal(rawRequest("a", 1, 2, 3))
	if err != nil {
		t.Fatal(err)
	}
	in := chunks(pool, data, 0)
	var m inferencepb.ModelInferRequest
	if err := newCodec(pool).Unmarshal(in, &m); err != nil {
		t.Fatal(err)
	}
	in.Free()
	if pool.holds(m.RawInputContents[0]) {
		t.Fatal("plain request aliases the received bytes")
	}
	if !bytes.Equal(m.RawInputContents[0], le32(1, 2, 3)) {
		t.Fatalf("raw input = %v", m.RawInputContents[0])
	}
	pool.check(t, true)
}

// responseCases are responses with no, empty, small, large and many raw
// outputs, parameters and unknown fields.
func responseCases() map[string]*inferencepb.ModelInferResponse {
	many := &inferencepb.ModelInferResponse{ModelName: "many"}
	for i := range 300 {
		many.RawOutputContents = append(many.RawOutputContents, pattern(i, i*7))
	}
	withUnknown := &inferencepb.ModelInferResponse{Id: "u", RawOutputContents: [][]byte{pattern(1, 5000)}}
	withUnknown.ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 50, protowire.VarintType), 3))
	return map[string]*inferencepb.ModelInferResponse{
		"empty message": {},
		"no outputs":    {ModelName: "m", ModelVersion: "1", Id: "id"},
		"empty outputs": {Outputs: []*inferencepb.ModelInferResponse_InferOutputTensor{{Name: "A"}, {Name: "B"}},
			RawOutputContents: [][]byte{{}, nil}},
		"small and large": {ModelName: "m", Id: "x",
			Parameters: map[string]*inferencepb.InferParameter{"a": p(int64(1)), "b": p("two")},
			Outputs: []*inferencepb.ModelInferResponse_InferOutputTensor{
				{Name: "S", Datatype: "UINT8", Shape: []int64{3}},
				{Name: "L", Datatype: "UINT8", Shape: []int64{1 << 20}},
				{Name: "T", Datatype: "UINT8", Shape: []int64{inlineOutputMax + 1}},
			},
			RawOutputContents: [][]byte{{1, 2, 3}, pattern(2, 1<<20), pattern(3, inlineOutputMax+1), pattern(4, inlineOutputMax)}},
		"many outputs":   many,
		"unknown fields": withUnknown,
		"large header":   {Id: strings.Repeat("i", 5000), RawOutputContents: [][]byte{pattern(5, 2000)}},
	}
}

// pattern is n bytes that depend on seed.
func pattern(seed, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(seed*31 + i*7 + i>>8)
	}
	return b
}

// checkEncode marshals v with the codec and checks that the bytes decode to
// want (a ModelInferResponse or ModelStreamInferResponse) and are as long as
// proto.Marshal's.
func checkEncode(t *testing.T, c *codec, v any, want proto.Message) {
	t.Helper()
	out, err := c.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	wire := out.Materialize()
	out.Free()
	if n := proto.Size(want); len(wire) != n {
		t.Fatalf("codec wrote %d bytes, proto.Marshal %d", len(wire), n)
	}
	got := want.ProtoReflect().New().Interface()
	if err := proto.Unmarshal(wire, got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, want) {
		t.Fatalf("decoded\n%v\nwant\n%v", got, want)
	}
}

func TestResponseCodecRoundTrip(t *testing.T) {
	for name, resp := range responseCases() {
		t.Run(name, func(t *testing.T) {
			pool := newTrackingPool()
			c := newCodec(pool)
			before := proto.Clone(resp)
			checkEncode(t, c, resp, resp)
			stream := &inferencepb.ModelStreamInferResponse{ErrorMessage: "e", InferResponse: resp}
			checkEncode(t, c, stream, stream)
			checkEncode(t, c, &streamInferResponse{ModelStreamInferResponse: stream}, stream)
			checkEncode(t, c, &inferResponse{ModelInferResponse: resp}, resp)
			if !proto.Equal(resp, before) || stream.InferResponse != resp {
				t.Fatal("Marshal changed the message")
			}
			pool.check(t, true)
		})
	}
	checkEncode(t, newCodec(nil), &inferencepb.ModelStreamInferResponse{ErrorMessage: "only"}, &inferencepb.ModelStreamInferResponse{ErrorMessage: "only"})
	checkEncode(t, newCodec(nil), &inferencepb.ModelStreamInferResponse{InferResponse: &inferencepb.ModelInferResponse{}},
		&inferencepb.ModelStreamInferResponse{InferResponse: &inferencepb.ModelInferResponse{}})
}

// FuzzInferResponseCodec checks that whatever ModelInferResponse the codec
// marshals, alone or in a stream response, decodes back to itself.
func FuzzInferResponseCodec(f *testing.F) {
	for _, resp := range responseCases() {
		b, err := proto.Marshal(resp)
		if err != nil {
			f.Fatal(err)
		}
		if len(b) <= 8<<10 { // large seeds slow the fuzzer down more than they find
			f.Add(b, "")
		}
	}
	f.Add([]byte{}, "error")
	c := newCodec(nil)
	f.Fuzz(func(t *testing.T, data []byte, errMsg string) {
		var resp inferencepb.ModelInferResponse
		if err := proto.Unmarshal(data, &resp); err != nil {
			return
		}
		checkEncode(t, c, &resp, &resp)
		stream := &inferencepb.ModelStreamInferResponse{ErrorMessage: errMsg, InferResponse: &resp}
		if _, err := proto.Marshal(stream); err != nil {
			return // an error message that is not UTF-8
		}
		checkEncode(t, c, stream, stream)
	})
}

// The received bytes of a request go with its response: outputs that alias
// them are written from views that keep them alive, and they go back to the
// pool exactly once, when gRPC frees the last view.
func TestCodecResponseKeepsInputAlive(t *testing.T) {
	pool := newTrackingPool()
	c := newCodec(pool)
	big, small := pattern(1, 100_000), pattern(2, 10)
	req := &inferencepb.ModelInferRequest{ModelName: "m", RawInputContents: [][]byte{big, small}}
	data, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	in := chunks(pool, data, 16<<10)
	r := newInferRequest()
	if err := c.Unmarshal(in, r); err != nil {
		t.Fatal(err)
	}
	in.Free()
	other := pattern(3, 5000)
	resp := &inferencepb.ModelInferResponse{RawOutputContents: [][]byte{r.RawInputContents[0], r.RawInputContents[1], other, r.RawInputContents[0][10:5000]}}
	want := proto.Clone(&inferencepb.ModelInferResponse{RawOutputContents: [][]byte{big, small, other, big[10:5000]}})

	wrapped := r.respond(resp)
	if r.buf != nil {
		t.Fatal("request still holds the received bytes after respond")
	}
	out, err := c.Marshal(wrapped)
	if err != nil {
		t.Fatal(err)
	}
	if wrapped.input != nil {
		t.Fatal("Marshal did not release the response's hold")
	}
	if !pool.holds(resp.RawOutputContents[0]) {
		t.Fatal("the received bytes went back to the pool before the response was written")
	}
	var got inferencepb.ModelInferResponse
	if err := proto.Unmarshal(out.Materialize(), &got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&got, want) {
		t.Fatal("response bytes differ")
	}
	out.Free() // as grpc-go does once written
	if pool.holds(resp.RawOutputContents[0]) {
		t.Fatal("the received bytes are still held after the response was written")
	}
	pool.check(t, true)
}

// A response that is never marshalled (a failed request) is released by
// the request's owner.
func TestCodecReleaseWithoutResponse(t *testing.T) {
	pool := newTrackingPool()
	data, err := proto.Marshal(&inferencepb.ModelInferRequest{RawInputContents: [][]byte{pattern(1, 3000)}})
	if err != nil {
		t.Fatal(err)
	}
	for _, split := range []int{0, 1000} {
		in := chunks(pool, data, split)
		r := newInferRequest()
		if err := newCodec(pool).Unmarshal(in, r); err != nil {
			t.Fatal(err)
		}
		in.Free()
		if r.buf == nil {
			t.Fatal("request does not hold its received bytes")
		}
		// A second message into the same request releases the first.
		in = chunks(pool, data, split)
		if err := newCodec(pool).Unmarshal(in, r); err != nil {
			t.Fatal(err)
		}
		in.Free()
		r.release()
		pool.check(t, true)
	}
}

func TestTieredPool(t *testing.T) {
	var p tieredPool
	for _, tc := range []struct{ n, capacity int }{
		{0, 0}, {1, 1 << 10}, {1 << 10, 1 << 10}, {1<<10 + 1, 2 << 10},
		{64<<10 + 40, 128 << 10}, {1<<20 + 1, 2 << 20},
	} {
		b := p.Get(tc.n)
		if len(*b) != tc.n || cap(*b) != tc.capacity {
			t.Errorf("Get(%d): len %d cap %d, want cap %d", tc.n, len(*b), cap(*b), tc.capacity)
		}
		p.Put(b)
	}
	// A buffer that is not a tier's is dropped, not handed out again.
	odd := make([]byte, 3000)
	p.Put(&odd)
	for range 10 {
		if b := p.Get(2000); cap(*b) != 2<<10 {
			t.Fatalf("Get(2000) returned a buffer of cap %d", cap(*b))
		}
	}
}
