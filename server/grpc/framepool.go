package grpcfront

import (
	"runtime"
	"sync"
	"syscall"
	"unsafe"

	"google.golang.org/grpc/mem"
)

// framePool is the transport's buffer pool: grpc-go reads every HTTP/2
// DATA frame of more than a KiB into a buffer from it, and a message of
// several frames stays in them until the codec has copied it into one
// buffer. For a large message that is its size a second time; from the Go
// heap those frames would stay resident until a collection and the
// scavenger (seconds later, payload.Releaser), so the response buffers
// that follow would add to them, not take their place.
//
// So frames of more than frameSmallMax bytes, up to the 16 KiB HTTP/2
// frame grpc-go accepts, live in slots of slabs mapped outside the heap.
// A slab that no frame uses any more is kept for the next messages, up to
// keepEmpty of them (their pages stay warm: a frame written into a fresh
// page costs a page fault), and unmapped past that; trim, which the
// payload Releaser calls once things are quiet, unmaps all that are empty.
// Smaller frames, and anything else the transport asks for, come from
// grpc-go's default pool.
//
// The codec copies a message of several frames into one buffer, so for a
// moment the message is resident twice. From discardFrom bytes, where that
// matters more than the page faults, it hands each frame's pages back to
// the kernel as soon as it has copied it (discard): nothing reads a
// message's frames after the codec (grpc-go frees them once Unmarshal
// returns; only its binary log, which Nereid never enables, would read
// them again, and see zeros). Pages a frame shares with the next message,
// at its ends, are left alone.
//
// grpc-go drops, without Put, the frames it had read for a stream that
// ended before the handler read them. A slot is therefore handed out
// inside a frameSlot whose cleanup (runtime.AddCleanup) frees the slot
// once the frameSlot is unreachable; Put stops the cleanup and frees the
// slot itself.
type framePool struct {
	small mem.BufferPool

	mu    sync.Mutex
	open  []*frameSlab // slabs with a free slot
	empty int          // slabs of open that no frame uses
	// slabs are the mapped slabs by their address, which is a multiple
	// of slabBytes.
	slabs map[uintptr]*frameSlab
	// mapped counts the slabs mapped now, maps every mapping made: for
	// the tests.
	mapped, maps int
}

const (
	frameSlot     = 16 << 10 // grpc-go's largest HTTP/2 frame
	frameSmallMax = 4 << 10  // frames up to this go to the small pool
	slabSlots     = 16       // a slab is 256 KiB
	slabBytes     = frameSlot * slabSlots
	keepEmpty     = 128      // empty slabs kept mapped (32 MiB)
	discardFrom   = 64 << 20 // messages whose frames go back as copied
)

// frameSlab is one mapping of slabSlots slots.
type frameSlab struct {
	mem   []byte // the slots, slabBytes aligned to slabBytes
	whole []byte // the mapping mem is in
	free  []int  // indices of free slots
	open  bool   // in framePool.open
}

// frameHandle is what Get hands out: a pointer to its first field, the
// buffer. Put recovers the handle from that pointer.
type frameHandle struct {
	b       []byte
	slab    *frameSlab // nil: a heap buffer (mapping failed)
	slot    int
	cleanup runtime.Cleanup
}

type slotRef struct {
	slab *frameSlab
	slot int
}

var _ mem.BufferPool = (*framePool)(nil)

func newFramePool() *framePool {
	return &framePool{small: mem.DefaultBufferPool(), slabs: map[uintptr]*frameSlab{}}
}

func (p *framePool) Get(n int) *[]byte {
	if n <= frameSmallMax || n > frameSlot {
		return p.small.Get(n)
	}
	h := &frameHandle{}
	p.mu.Lock()
	s, slot := p.takeLocked()
	p.mu.Unlock()
	if s == nil {
		h.b = make([]byte, n, frameSlot)
		return &h.b
	}
	off := slot * frameSlot
	h.b = s.mem[off : off+n : off+frameSlot]
	h.slab, h.slot = s, slot
	h.cleanup = runtime.AddCleanup(h, p.lost, slotRef{slab: s, slot: slot})
	return &h.b
}

func (p *framePool) Put(b *[]byte) {
	if cap(*b) != frameSlot {
		p.small.Put(b)
		return
	}
	// Only Get hands out buffers of this capacity: the small pool's tiers
	// are 256 B, 4 KiB, 32 KiB and 1 MiB, and frameSlot-sized requests
	// never reach it. b points to a frameHandle's first field.
	h := (*frameHandle)(unsafe.Pointer(b))
	if h.slab == nil {
		return
	}
	h.cleanup.Stop()
	p.give(slotRef{slab: h.slab, slot: h.slot})
	h.slab = nil
}

// lost frees the slot of a handle that was dropped without Put.
func (p *framePool) lost(r slotRef) { p.give(r) }

// takeLocked returns a free slot, mapping a slab when none is open; nil
// when the mapping fails.
func (p *framePool) takeLocked() (*frameSlab, int) {
	if len(p.open) == 0 {
		m, whole, err := mapAligned()
		if err != nil {
			return nil, 0
		}
		s := &frameSlab{mem: m, whole: whole, free: make([]int, 0, slabSlots), open: true}
		p.slabs[uintptr(unsafe.Pointer(unsafe.SliceData(m)))] = s
		for k := slabSlots - 1; k >= 0; k-- {
			s.free = append(s.free, k)
		}
		p.open = append(p.open, s)
		p.mapped++
		p.maps++
		p.empty++
	}
	s := p.open[len(p.open)-1]
	if len(s.free) == slabSlots {
		p.empty--
	}
	slot := s.free[len(s.free)-1]
	s.free = s.free[:len(s.free)-1]
	if len(s.free) == 0 {
		p.open = p.open[:len(p.open)-1]
		s.open = false
	}
	return s, slot
}

func (p *framePool) give(r slotRef) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := r.slab
	s.free = append(s.free, r.slot)
	if !s.open {
		s.open = true
		p.open = append(p.open, s)
	}
	if len(s.free) < slabSlots {
		return
	}
	if p.empty < keepEmpty {
		p.empty++
		return
	}
	// Unmap it: nothing refers to its slots any more.
	for k, o := range p.open {
		if o == s {
			p.open = append(p.open[:k], p.open[k+1:]...)
			break
		}
	}
	p.unmapLocked(s)
}

// trim unmaps every slab no frame uses.
func (p *framePool) trim() {
	p.mu.Lock()
	defer p.mu.Unlock()
	kept := p.open[:0]
	for _, s := range p.open {
		if len(s.free) == slabSlots {
			p.unmapLocked(s)
			continue
		}
		kept = append(kept, s)
	}
	clear(p.open[len(kept):])
	p.open = kept
	p.empty = 0
}

func (p *framePool) unmapLocked(s *frameSlab) {
	delete(p.slabs, uintptr(unsafe.Pointer(unsafe.SliceData(s.mem))))
	_ = syscall.Munmap(s.whole)
	s.mem, s.whole = nil, nil
	s.open = false
	p.mapped--
}

// mapAligned maps a slab at an address that is a multiple of slabBytes,
// which is how discard finds the slab a frame is in. It maps twice the size
// and uses the aligned part; the rest is address space only, never touched,
// so never resident. whole is the mapping, for munmap.
func mapAligned() (slab, whole []byte, err error) {
	whole, err = syscall.Mmap(-1, 0, 2*slabBytes, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		return nil, nil, err
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(whole)))
	head := int((slabBytes - base%slabBytes) % slabBytes)
	return whole[head : head+slabBytes : head+slabBytes], whole, nil
}

// discard hands back to the kernel the pages that lie wholly within b,
// when b is part of a frame in one of the pool's slabs; other memory is
// left alone. The bytes of those pages read as zeros afterwards.
func (p *framePool) discard(b []byte) {
	if uintptr(len(b)) < pageSize {
		return
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	p.mu.Lock()
	s := p.slabs[start-start%slabBytes]
	p.mu.Unlock()
	if s == nil {
		return
	}
	first := (start + pageSize - 1) &^ (pageSize - 1)
	end := (start + uintptr(len(b))) &^ (pageSize - 1)
	if end <= first {
		return
	}
	off := int(first - start)
	_ = syscall.Madvise(b[off:off+int(end-first)], syscall.MADV_DONTNEED)
}

var pageSize = uintptr(syscall.Getpagesize())

// stats reports the slabs mapped and the slots in use, for the tests.
func (p *framePool) stats() (mapped, used int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	used = p.mapped * slabSlots
	for _, s := range p.open {
		used -= len(s.free)
	}
	return p.mapped, used
}

// mappings is how many slabs were ever mapped, for the tests.
func (p *framePool) mappings() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.maps
}
