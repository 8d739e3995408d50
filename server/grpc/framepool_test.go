package grpcfront

import (
	"runtime"
	"testing"
	"time"
)

func TestFramePool(t *testing.T) {
	p := newFramePool()
	// Small frames and anything larger than a frame are the small pool's.
	for _, n := range []int{1, 4 << 10, 16<<10 + 1, 1 << 20} {
		b := p.Get(n)
		if len(*b) != n || cap(*b) == frameSlot {
			t.Fatalf("Get(%d): len %d cap %d", n, len(*b), cap(*b))
		}
		p.Put(b)
	}
	if mapped, _ := p.stats(); mapped != 0 {
		t.Fatalf("%d slabs mapped for the small pool's sizes", mapped)
	}

	// A large message's frames: every slot written, then all put back.
	const frames = 40 * slabSlots
	held := make([]*[]byte, 0, frames)
	for k := range frames {
		b := p.Get(frameSlot - k%7)
		if cap(*b) != frameSlot {
			t.Fatalf("frame %d: cap %d", k, cap(*b))
		}
		for j := range *b {
			(*b)[j] = byte(k)
		}
		held = append(held, b)
	}
	if mapped, used := p.stats(); mapped != frames/slabSlots || used != frames {
		t.Fatalf("holding %d frames: %d slabs, %d slots used", frames, mapped, used)
	}
	for k, b := range held {
		if (*b)[0] != byte(k) || (*b)[len(*b)-1] != byte(k) {
			t.Fatalf("frame %d overwritten", k)
		}
		*b = (*b)[:1] // grpc-go puts back a prefix
		p.Put(b)
	}
	if mapped, used := p.stats(); mapped != frames/slabSlots || used != 0 {
		t.Fatalf("after Put: %d slabs mapped (want all %d kept), %d slots used", mapped, frames/slabSlots, used)
	}
	// Past keepEmpty, an empty slab is unmapped; trim unmaps the rest.
	held = held[:0]
	for range (keepEmpty + 10) * slabSlots {
		held = append(held, p.Get(frameSlot))
	}
	for _, b := range held {
		p.Put(b)
	}
	if mapped, used := p.stats(); mapped != keepEmpty || used != 0 {
		t.Fatalf("after %d slabs' frames: %d slabs mapped (want %d kept), %d slots used", keepEmpty+10, mapped, keepEmpty, used)
	}
	kept := p.Get(frameSlot) // pins its slab
	p.trim()
	if mapped, used := p.stats(); mapped != 1 || used != 1 {
		t.Fatalf("after trim: %d slabs mapped, %d slots used; want the one in use", mapped, used)
	}
	p.Put(kept)

	// Frames grpc-go drops without Put are freed once unreachable.
	for range 3 * slabSlots {
		_ = p.Get(frameSlot)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		if _, used := p.stats(); used == 0 {
			break
		}
		if time.Now().After(deadline) {
			_, used := p.stats()
			t.Fatalf("%d slots of dropped frames still in use", used)
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.trim()
	if mapped, _ := p.stats(); mapped != 0 {
		t.Fatalf("%d slabs mapped after the dropped frames and a trim", mapped)
	}

	// discard zeroes (hands back) the whole pages of a frame, and leaves
	// memory that is not the pool's alone.
	b := p.Get(frameSlot)
	for j := range *b {
		(*b)[j] = 0xff
	}
	p.discard((*b)[100:])
	if (*b)[99] != 0xff || (*b)[pageSize-1] != 0xff || (*b)[pageSize] != 0 || (*b)[frameSlot-1] != 0 {
		t.Fatal("discard did not hand back exactly the whole pages of the frame")
	}
	p.Put(b)
	heap := make([]byte, 4*pageSize)
	for j := range heap {
		heap[j] = 1
	}
	p.discard(heap)
	if heap[2*pageSize] != 1 {
		t.Fatal("discard touched memory that is not the pool's")
	}
}

// Large messages through a server: their frames are unmapped once the
// codec has copied them, the responses are right, and no slot stays in use.
func TestFramePoolServer(t *testing.T) {
	c := start(t, &fakeCore{}, Options{})
	for k := range 2 {
		payloads := [][]byte{pattern(k, 8<<20+5), pattern(k+1, 70_000)}
		resp, err := c.infer.ModelInfer(testCtx(t), tensorRequest("big", payloads...))
		if err != nil {
			t.Fatal(err)
		}
		checkEcho(t, resp, "big", payloads...)
	}
	if mapped, used := c.srv.frames.stats(); mapped > keepEmpty || used != 0 {
		t.Fatalf("after two 8 MiB messages: %d slabs mapped, %d slots in use", mapped, used)
	}
	// The frames were the pool's: 8 MiB takes 32 slabs.
	if maps := c.srv.frames.mappings(); maps < (8<<20)/slabBytes {
		t.Fatalf("%d slabs mapped in all: the frames did not come from the pool", maps)
	}
}
