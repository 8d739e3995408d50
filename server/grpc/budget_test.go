package grpcfront

import (
	"errors"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"google.golang.org/protobuf/proto"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/payload"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// A message received in several buffers is copied once; the copy is what
// the payload budget counts, from the decode until the last reference is
// freed, and a message that does not fit is refused without a copy.
func TestCodecPayloadBudget(t *testing.T) {
	vals := make([]uint32, 500)
	data, err := proto.Marshal(rawRequest("big", vals...))
	if err != nil {
		t.Fatal(err)
	}
	n := int64(len(data))

	t.Run("fits", func(t *testing.T) {
		pool := newTrackingPool()
		c := newCodec(pool)
		c.budget = payload.NewBudget(n, nil)
		in := chunks(pool, data, 100)
		r := newInferRequest()
		if err := c.Unmarshal(in, r); err != nil {
			t.Fatal(err)
		}
		in.Free()
		if r.refused != nil || r.GetId() != "big" {
			t.Fatalf("refused %v, id %q", r.refused, r.GetId())
		}
		if got := c.budget.InUse(); got != n {
			t.Fatalf("budget in use %d while the request holds %d bytes", got, n)
		}
		resp := r.respond(&inferencepb.ModelInferResponse{RawOutputContents: [][]byte{r.RawInputContents[0]}})
		out, err := c.Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.budget.InUse(); got != n {
			t.Fatalf("budget in use %d while a marshalled output still aliases the input", got)
		}
		out.Free() // as grpc-go does once the bytes are written
		if got := c.budget.InUse(); got != 0 {
			t.Fatalf("budget in use %d after the response was written", got)
		}
		pool.check(t, true)
	})

	t.Run("refused", func(t *testing.T) {
		pool := newTrackingPool()
		c := newCodec(pool)
		c.budget = payload.NewBudget(n-1, nil)
		in := chunks(pool, data, 100)
		r := newInferRequest()
		if err := c.Unmarshal(in, r); err != nil {
			t.Fatalf("a refusal is not a decode error: %v", err)
		}
		in.Free()
		if inference.CodeOf(r.refused) != inference.CodeUnavailable || !strings.Contains(r.refused.Error(), "--payload-budget-bytes") {
			t.Fatalf("refused = %v", r.refused)
		}
		if r.buf != nil || r.GetId() != "" || c.budget.InUse() != 0 {
			t.Fatalf("a refused message is held: buf %v, id %q, budget in use %d", r.buf != nil, r.GetId(), c.budget.InUse())
		}
		pool.check(t, true)
	})

	t.Run("one buffer is not counted", func(t *testing.T) {
		pool := newTrackingPool()
		c := newCodec(pool)
		c.budget = payload.NewBudget(1, nil)
		in := chunks(pool, data, 0)
		r := newInferRequest()
		if err := c.Unmarshal(in, r); err != nil || r.refused != nil {
			t.Fatalf("err %v, refused %v", err, r.refused)
		}
		in.Free()
		r.release()
		pool.check(t, true)
	})
}

// Buffers above the largest tier are mapped for their message alone and
// unmapped when put back; the largest tier is pooled.
func TestTieredPoolLargeBuffers(t *testing.T) {
	p := &tieredPool{}
	// Every size past the top tier, those with its bit length included
	// (up to 8 MiB - 1), is unmapped by Put: a second munmap of the same
	// mapping then fails with EINVAL (syscall tracks its mappings).
	for _, n := range []int{payload.LargeSize + 1, payload.LargeSize + 100, 2*payload.LargeSize - 1, 2*payload.LargeSize + 1} {
		b := p.Get(n)
		if len(*b) != n || cap(*b) != len(*b) {
			t.Fatalf("len %d cap %d", len(*b), cap(*b))
		}
		(*b)[len(*b)-1] = 1
		kept := *b
		p.Put(b)
		if err := syscall.Munmap(kept); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("a buffer of %d bytes was still mapped after Put (munmap: %v)", n, err)
		}
	}
	tier := p.Get(payload.LargeSize)
	if cap(*tier) != 1<<maxTier || 1<<maxTier != payload.LargeSize {
		t.Fatalf("the largest tier holds %d bytes, LargeSize is %d", cap(*tier), payload.LargeSize)
	}
	p.Put(tier)
}

// A large message is copied so that its first raw input is aligned for
// backends whose kernels want aligned elements; the decode is unchanged.
func TestCodecAlignsLargeRawInput(t *testing.T) {
	for _, id := range []string{"", "a", "abc", "odd-length-id"} {
		m := &inferencepb.ModelInferRequest{ModelName: "m", Id: id, RawInputContents: [][]byte{make([]byte, payload.LargeSize)}}
		m.RawInputContents[0][0], m.RawInputContents[0][payload.LargeSize-1] = 7, 9
		data, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		pool := newTrackingPool()
		c := newCodec(nil)
		in := chunks(pool, data, 16<<10)
		r := newInferRequest()
		if err := c.Unmarshal(in, r); err != nil {
			t.Fatal(err)
		}
		in.Free()
		raw := r.RawInputContents[0]
		if uintptr(unsafe.Pointer(&raw[0]))%rawAlign != 0 {
			t.Errorf("id %q: raw input at %p, not %d-byte aligned", id, &raw[0], rawAlign)
		}
		if !proto.Equal(r.ModelInferRequest, m) {
			t.Errorf("id %q: decoded message differs", id)
		}
		r.release()
		pool.check(t, true)
	}
}
