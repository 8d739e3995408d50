package grpcfront

import (
	"errors"
	"math/bits"
	"sync"
	"sync/atomic"
	"unsafe"

	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/nereid-project/nereid/payload"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// Tensor bytes on the gRPC path are not copied into fresh memory: the codec
// below makes raw_input_contents alias the received message (which grpc-go
// holds in pooled buffers, one per HTTP/2 frame; a message of several frames
// is copied once into one pooled buffer, since each input must be
// contiguous) and hands raw_output_contents to gRPC by reference.
//
// Lifetime of a received message: grpc-go frees the BufferSlice it passes
// to Unmarshal once Unmarshal returns, so for an inferRequest the codec takes
// its own reference (a single received buffer is referenced as is; several
// are copied once into one buffer from the pool) and stores it in
// inferRequest.buf. From then on exactly one owner at a time holds that
// reference and frees it once:
//
//   - the ModelInfer and ModelStreamInfer handlers (modelInferHandler,
//     modelStreamInfer) own it while the request runs; a request that fails,
//     or is never run because the RPC ended, is released there;
//   - a successful response takes it over (inferResponse, streamInferResponse),
//     and Marshal frees it after giving every output that aliases it its own
//     reference (a mem.Buffer view), which grpc-go frees once the bytes are
//     written to the connection. An identity output thus keeps the input
//     alive exactly as long as gRPC needs it.
//
// grpc-go calls Marshal for every reply a unary handler returns without an
// error, and SendMsg always marshals first, so a reference is never lost on
// the normal paths. One that is lost anyway (a panic between the owners) is
// only garbage: no table refers to it, so the collector reclaims the memory,
// which merely does not go back to the pool.
//
// Nothing may read a request's raw_input_contents, or a response's outputs
// that alias them, once they are released: interceptors and stats handlers
// must not keep the messages, and grpc.EnableTracing (golang.org/x/net/trace,
// which formats messages lazily; off by default, never set by Nereid) must
// stay off.

// inferRequest is what ModelInfer and ModelStreamInfer decode into: the
// message, whose raw_input_contents alias buf, the received bytes. buf is nil
// when nothing aliases them. Whoever holds an inferRequest frees buf exactly
// once, with release or by passing it on with respond / streamRespond.
type inferRequest struct {
	*inferencepb.ModelInferRequest
	buf mem.Buffer
	// refused is set, and the message left empty, when the received bytes
	// did not fit in the payload budget: the handler answers with it.
	refused error
}

func newInferRequest() *inferRequest {
	return &inferRequest{ModelInferRequest: new(inferencepb.ModelInferRequest)}
}

// release frees the received bytes; the message's raw_input_contents must
// not be read afterwards.
func (r *inferRequest) release() {
	if r.buf != nil {
		r.buf.Free()
		r.buf = nil
	}
}

// respond wraps resp, which may alias the request's inputs, and passes the
// received bytes on to it.
func (r *inferRequest) respond(resp *inferencepb.ModelInferResponse) *inferResponse {
	out := &inferResponse{ModelInferResponse: resp, input: r.buf}
	r.buf = nil
	return out
}

func (r *inferRequest) streamRespond(resp *inferencepb.ModelStreamInferResponse) *streamInferResponse {
	out := &streamInferResponse{ModelStreamInferResponse: resp, input: r.buf}
	r.buf = nil
	return out
}

// streamShare wraps a response that is not the request's last: it gets a
// reference of its own to the received bytes, and the request keeps its.
func (r *inferRequest) streamShare(resp *inferencepb.ModelStreamInferResponse) *streamInferResponse {
	if r.buf != nil {
		r.buf.Ref()
	}
	return &streamInferResponse{ModelStreamInferResponse: resp, input: r.buf}
}

// release frees the reference of a response that will not be sent.
func (r *streamInferResponse) release() {
	if r != nil && r.input != nil {
		r.input.Free()
		r.input = nil
	}
}

// inferResponse and streamInferResponse are responses whose
// raw_output_contents may alias input, the received bytes of their request;
// Marshal frees input. Embedding keeps them proto messages for whatever in
// grpc-go looks at a reply (stats handlers, tracing).
type inferResponse struct {
	*inferencepb.ModelInferResponse
	input mem.Buffer
	// release, when set, frees the backend memory the raw outputs live in
	// (inference.Response.Done): the codec references those bytes instead
	// of a copy and calls it once gRPC is done writing them.
	release func()
}

type streamInferResponse struct {
	*inferencepb.ModelStreamInferResponse
	input mem.Buffer
}

// Field numbers of the fields the codec encodes or decodes itself, read from
// the descriptors so that they follow the .proto file.
var (
	rawInputField       = fieldNumber(&inferencepb.ModelInferRequest{}, "raw_input_contents")
	rawOutputField      = fieldNumber(&inferencepb.ModelInferResponse{}, "raw_output_contents")
	streamResponseField = fieldNumber(&inferencepb.ModelStreamInferResponse{}, "infer_response")
)

func fieldNumber(m proto.Message, name string) protowire.Number {
	f := m.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(name))
	if f == nil {
		panic("grpcfront: no field " + name + " in " + string(m.ProtoReflect().Descriptor().FullName()))
	}
	return f.Number()
}

// inlineOutputMax is the largest raw output the codec copies into the
// message's own buffer instead of referencing it: below it a reference
// (an interface value and a buffer of its own for gRPC to walk) costs more
// than the copy.
const inlineOutputMax = 256

// codec is the server's gRPC codec. It carries grpc-go's name for the
// protobuf codec, so it is what every client asks for, and is installed on
// this server alone with grpc.ForceServerCodecV2; the process-wide registry
// keeps grpc-go's. Messages other than the ones below go to grpc-go's codec.
//
//   - Unmarshal into an *inferRequest gives exactly proto.Unmarshal's result
//     and errors, but raw_input_contents alias the received bytes, which
//     the request then holds (see above). A plain *ModelInferRequest has no
//     one to release them, so it is decoded the standard way.
//   - Marshal of a ModelInferResponse or a ModelStreamInferResponse, plain
//     or wrapped, encodes everything but raw_output_contents into one small
//     buffer and hands each output of more than inlineOutputMax bytes to
//     gRPC by reference, after its tag and length; the output records come
//     last, after any unknown fields.
//
// Outputs that do not alias the request are referenced as plain slices, so
// the core must not change their bytes once Infer returned (Core's
// contract): gRPC writes them after the handler is done.
type codec struct {
	std  encoding.CodecV2
	pool mem.BufferPool // for messages received in several buffers and large response headers
	// budget, when set, caps the bytes of the received messages the codec
	// copies and holds (Options.PayloadBudget); a message that does not fit
	// is not copied but refused (inferRequest.refused).
	budget *payload.Budget
	// frames, when set, is the transport's pool: the codec hands the
	// pages of a large message's frames back to the kernel as it copies
	// them (framePool.discard).
	frames *framePool
}

var _ encoding.CodecV2 = (*codec)(nil)

// receivePool is the codec's default pool.
var receivePool = &tieredPool{}

// tieredPool is a mem.BufferPool with a tier for every power of two from
// 1 KiB to 4 MiB, so that a buffer is less than twice its message (grpc-go's
// default pool jumps from 32 KiB to 1 MiB, which would keep 1 MiB alive for
// each request of 64 KiB in flight), and that does not clear the buffers it
// hands out, since the codec overwrites all it asks for. Larger buffers are
// not pooled: each is mapped for its message alone (payload.Alloc) and
// unmapped when freed, so a large message costs its size once, and only
// while it is held.
type tieredPool struct {
	tiers [maxTier + 1]sync.Pool // tier k holds buffers of capacity 1<<k
}

const minTier, maxTier = 10, 22 // 1<<maxTier is payload.LargeSize

var _ mem.BufferPool = (*tieredPool)(nil)

func (p *tieredPool) Get(n int) *[]byte {
	k := max(bits.Len(uint(n-1)), minTier) // the smallest 1<<k >= n
	if n <= 0 {
		b := make([]byte, n)
		return &b
	}
	if k > maxTier {
		b := payload.Alloc(n)
		return &b
	}
	if b, ok := p.tiers[k].Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<k)
	return &b
}

func (p *tieredPool) Put(b *[]byte) {
	c := cap(*b)
	if c > 1<<maxTier {
		// Mapped by Get for its message alone, whatever its size: one of
		// 4 MiB + 1 byte has the top tier's bit length.
		payload.Free(*b)
		return
	}
	k := bits.Len(uint(c)) - 1
	if k < minTier || c != 1<<k {
		return // not one of the pool's
	}
	p.tiers[k].Put(b)
}

// newCodec returns the codec; pool nil means receivePool.
func newCodec(pool mem.BufferPool) *codec {
	if pool == nil {
		pool = receivePool
	}
	return &codec{std: encoding.GetCodecV2(protocodec.Name), pool: pool}
}

func (*codec) Name() string { return protocodec.Name }

func (c *codec) Unmarshal(data mem.BufferSlice, v any) error {
	if r, ok := v.(*inferRequest); ok {
		return c.unmarshalInferRequest(data, r)
	}
	return c.std.Unmarshal(data, v)
}

func (c *codec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case *inferResponse:
		defer freeBuffer(&m.input)
		rel := m.release
		m.release = nil
		return c.marshalResponse(nil, m.ModelInferResponse, m.input, rel)
	case *streamInferResponse:
		defer freeBuffer(&m.input)
		return c.marshalResponse(m.ModelStreamInferResponse, m.GetInferResponse(), m.input, nil)
	case *inferencepb.ModelInferResponse:
		return c.marshalResponse(nil, m, nil, nil)
	case *inferencepb.ModelStreamInferResponse:
		return c.marshalResponse(m, m.GetInferResponse(), nil, nil)
	}
	return c.std.Marshal(v)
}

func freeBuffer(b *mem.Buffer) {
	if *b != nil {
		(*b).Free()
		*b = nil
	}
}

// unmarshalInferRequest decodes data into r. A message grpc-go received in
// one buffer is aliased as it is; one it received in several (larger than
// an HTTP/2 frame) is copied once into a pooled buffer, which then takes
// the place of the copy protobuf would make of each input.
func (c *codec) unmarshalInferRequest(data mem.BufferSlice, r *inferRequest) error {
	// A second message into the same request (a unary RPC whose client
	// sends two, which grpc-go then refuses) replaces the first.
	r.release()
	r.refused = nil
	if r.ModelInferRequest == nil {
		r.ModelInferRequest = new(inferencepb.ModelInferRequest)
	}
	var buf mem.Buffer
	var msg []byte
	if len(data) <= 1 {
		buf = data.MaterializeToBuffer(c.pool) // the one received buffer, referenced
	} else {
		n := data.Len()
		pad := alignPad(data, n)
		if err := c.budget.Acquire(int64(n + pad)); err != nil {
			proto.Reset(r.ModelInferRequest)
			r.refused = err
			return nil
		}
		p := c.pool.Get(n + pad)
		c.copyFrames((*p)[pad:], data, n)
		buf = mem.NewBuffer(p, budgetedPool{pool: c.pool, budget: c.budget, n: int64(n + pad)})
		msg = buf.ReadOnlyData()[pad:]
	}
	if msg == nil {
		msg = buf.ReadOnlyData()
	}
	aliased, err := unmarshalAliasing(msg, r.ModelInferRequest)
	if err != nil || !aliased {
		buf.Free()
		return err
	}
	r.buf = buf
	return nil
}

// copyFrames copies the n bytes of data into dst. The frames of a message
// of discardFrom bytes or more go back to the kernel as they are copied,
// so that the message is not resident twice.
func (c *codec) copyFrames(dst []byte, data mem.BufferSlice, n int) {
	if c.frames == nil || n < discardFrom {
		data.CopyTo(dst)
		return
	}
	for _, b := range data {
		d := b.ReadOnlyData()
		dst = dst[copy(dst, d):]
		c.frames.discard(d)
	}
}

// rawAlign is the alignment alignPad gives a large message's first raw
// input: a backend that needs its elements aligned (ONNX Runtime's kernels)
// would otherwise copy the whole tensor once more.
const rawAlign = 64

// alignPad is how many bytes to put before a copied message of n bytes so
// that its first raw_input_contents entry starts on a rawAlign boundary
// (0 for messages under payload.LargeSize, where a copy costs little, and
// when the entry is not within the first alignScan bytes).
func alignPad(data mem.BufferSlice, n int) int {
	if n < payload.LargeSize {
		return 0
	}
	var prefix [alignScan]byte
	k := 0
	for _, b := range data {
		k += copy(prefix[k:], b.ReadOnlyData())
		if k == len(prefix) {
			break
		}
	}
	off := firstRawInput(prefix[:k])
	if off < 0 {
		return 0
	}
	return (rawAlign - off%rawAlign) % rawAlign
}

// alignScan bounds the part of a message alignPad looks at: the records
// before the raw inputs (the inputs' names, types and shapes, parameters)
// are small.
const alignScan = 4 << 10

// firstRawInput is the offset in b of the first raw_input_contents entry's
// bytes, or -1 when the records of b end, or stop parsing, before one.
func firstRawInput(b []byte) int {
	for i := 0; i < len(b); {
		num, typ, tn := protowire.ConsumeTag(b[i:])
		if tn < 0 {
			return -1
		}
		if num == rawInputField && typ == protowire.BytesType {
			_, ln := protowire.ConsumeVarint(b[i+tn:])
			if ln < 0 {
				return -1
			}
			return i + tn + ln
		}
		vn := protowire.ConsumeFieldValue(num, typ, b[i+tn:])
		if vn < 0 {
			return -1
		}
		i += tn + vn
	}
	return -1
}

// budgetedPool frees one copied message: its buffer goes back to the pool
// and its bytes back to the budget.
type budgetedPool struct {
	pool   mem.BufferPool
	budget *payload.Budget
	n      int64
}

func (p budgetedPool) Get(n int) *[]byte { return p.pool.Get(n) }

func (p budgetedPool) Put(b *[]byte) {
	p.pool.Put(b)
	p.budget.Release(p.n)
}

// unmarshalAliasing is proto.Unmarshal(b, m), except that the entries of
// raw_input_contents are sub-slices of b (capacity clipped) instead of
// copies. It reports whether a non-empty entry aliases b.
//
// The top-level records are walked with protowire; runs of records other
// than raw_input_contents are merged into m by proto.Unmarshal in order,
// which is how protobuf defines parsing a concatenation, so repeated and
// message fields split across records, oneofs, maps and unknown fields come
// out as proto.Unmarshal makes them. A raw_input_contents record with
// another wire type is an unknown field to protobuf and stays in its run.
// A message whose records do not parse is left to proto.Unmarshal whole,
// so it fails (or not) exactly as there.
func unmarshalAliasing(b []byte, m *inferencepb.ModelInferRequest) (aliased bool, err error) {
	n, ok := countRawInputs(b)
	if !ok || n == 0 {
		return false, proto.Unmarshal(b, m)
	}
	proto.Reset(m)
	merge := proto.UnmarshalOptions{Merge: true}
	raw := make([][]byte, 0, n)
	run := 0 // start of the current run of other records
	for i := 0; i < len(b); {
		num, typ, tn := protowire.ConsumeTag(b[i:])
		if num != rawInputField || typ != protowire.BytesType {
			i += tn + protowire.ConsumeFieldValue(num, typ, b[i+tn:])
			continue
		}
		v, vn := protowire.ConsumeBytes(b[i+tn:])
		if run < i {
			if err := merge.Unmarshal(b[run:i], m); err != nil {
				return false, err
			}
		}
		raw = append(raw, v[:len(v):len(v)])
		aliased = aliased || len(v) > 0
		i += tn + vn
		run = i
	}
	if run < len(b) {
		if err := merge.Unmarshal(b[run:], m); err != nil {
			return false, err
		}
	}
	m.RawInputContents = raw
	return aliased, nil
}

// countRawInputs counts the raw_input_contents records of a serialized
// ModelInferRequest; ok is false when the top-level records do not parse.
func countRawInputs(b []byte) (n int, ok bool) {
	for len(b) > 0 {
		num, typ, tn := protowire.ConsumeTag(b)
		if tn < 0 {
			return 0, false
		}
		vn := protowire.ConsumeFieldValue(num, typ, b[tn:])
		if vn < 0 {
			return 0, false
		}
		if num == rawInputField && typ == protowire.BytesType {
			n++
		}
		b = b[tn+vn:]
	}
	return n, true
}

// marshalResponse encodes a ModelInferResponse r, or, when outer is not
// nil, the ModelStreamInferResponse outer whose infer_response is r. Outputs
// that lie in input are referenced through views of it, which hold their own
// reference until gRPC has written them.
func (c *codec) marshalResponse(outer *inferencepb.ModelStreamInferResponse, r *inferencepb.ModelInferResponse, input mem.Buffer, release func()) (_ mem.BufferSlice, err error) {
	// Outputs in backend memory are referenced through buffers that call
	// release when gRPC frees the last of them; the marshalling holds one
	// count of its own. One too small for gRPC to count references is
	// copied, like the smallest outputs.
	var held *releaseOnFree
	inline := func(d []byte) bool { return len(d) <= inlineOutputMax }
	if release != nil {
		held = &releaseOnFree{f: release}
		held.n.Store(1)
		defer held.Put(nil)
		inline = func(d []byte) bool { return len(d) <= inlineOutputMax || mem.IsBelowBufferPoolingThreshold(len(d)) }
	}
	// The other fields are encoded by protobuf with raw_output_contents
	// (and, for a stream response, infer_response) taken out for the time
	// of the call: the messages are the handler's own, not shared.
	var raw [][]byte
	if r != nil {
		raw = r.RawOutputContents
		r.RawOutputContents = nil
		defer func() { r.RawOutputContents = raw }()
	}
	if outer != nil && outer.InferResponse != nil {
		outer.InferResponse = nil
		defer func() { outer.InferResponse = r }()
	}

	// Sizes: head holds everything but the referenced outputs; fields is
	// the part of it that protobuf encodes.
	opts := proto.MarshalOptions{UseCachedSize: true} // after proto.Size below
	innerSize, fields, rawHead, refs := 0, 0, 0, 0
	if r != nil {
		innerSize = proto.Size(r)
		fields = innerSize
		for _, d := range raw {
			prefix := protowire.SizeTag(rawOutputField) + protowire.SizeVarint(uint64(len(d)))
			innerSize += prefix + len(d)
			rawHead += prefix
			if inline(d) {
				rawHead += len(d)
			} else {
				refs++
			}
		}
	}
	if outer != nil {
		fields += proto.Size(outer)
		if r != nil {
			fields += protowire.SizeTag(streamResponseField) + protowire.SizeVarint(uint64(innerSize))
		}
	}
	headSize := fields + rawHead

	var head mem.Buffer
	var hb []byte
	if mem.IsBelowBufferPoolingThreshold(headSize) {
		hb = make([]byte, 0, headSize)
		head = mem.SliceBuffer(hb[:headSize])
	} else {
		p := c.pool.Get(headSize)
		hb = (*p)[:0]
		head = mem.NewBuffer(p, c.pool)
	}

	if outer != nil {
		if hb, err = opts.MarshalAppend(hb, outer); err != nil {
			head.Free()
			return nil, err
		}
		if r != nil {
			hb = protowire.AppendTag(hb, streamResponseField, protowire.BytesType)
			hb = protowire.AppendVarint(hb, uint64(innerSize))
		}
	}
	if r != nil {
		if hb, err = opts.MarshalAppend(hb, r); err != nil {
			head.Free()
			return nil, err
		}
	}

	if len(hb) != fields {
		// Only a message changed while being encoded gets here; the
		// views below would point at the wrong bytes.
		head.Free()
		return nil, errMarshalSize
	}

	out := make(mem.BufferSlice, 0, 1+2*refs)
	var base []byte
	if input != nil {
		base = input.ReadOnlyData()
	}
	start := 0 // of the head not yet in out
	for _, d := range raw {
		hb = protowire.AppendTag(hb, rawOutputField, protowire.BytesType)
		hb = protowire.AppendVarint(hb, uint64(len(d)))
		if inline(d) {
			hb = append(hb, d...)
			continue
		}
		out = append(out, head.Slice(start, len(hb)))
		start = len(hb)
		switch off, ok := offsetIn(base, d); {
		case ok:
			out = append(out, input.Slice(off, off+len(d)))
		case held != nil:
			held.n.Add(1)
			out = append(out, mem.NewBuffer(&d, held))
		default:
			out = append(out, mem.SliceBuffer(d))
		}
	}
	if start < len(hb) || len(out) == 0 {
		out = append(out, head.Slice(start, len(hb)))
	}
	head.Free() // the slices of it in out hold their own references
	return out, nil
}

var errMarshalSize = errors.New("grpcfront: message changed while being marshalled")

// releaseOnFree is the mem.BufferPool of output buffers in backend memory:
// each buffer's last Free puts it back here, and the last of them (with
// the marshalling's own count) calls f.
type releaseOnFree struct {
	n atomic.Int32
	f func()
}

var _ mem.BufferPool = (*releaseOnFree)(nil)

func (*releaseOnFree) Get(n int) *[]byte {
	b := make([]byte, n)
	return &b
}

func (r *releaseOnFree) Put(*[]byte) {
	if r.n.Add(-1) == 0 {
		r.f()
	}
}

// offsetIn reports where d lies in base, if it lies wholly inside it.
func offsetIn(base, d []byte) (int, bool) {
	if len(base) == 0 || len(d) == 0 || len(d) > len(base) {
		return 0, false
	}
	b := uintptr(unsafe.Pointer(unsafe.SliceData(base)))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(d)))
	if p < b || p-b > uintptr(len(base)-len(d)) {
		return 0, false
	}
	return int(p - b), true
}
