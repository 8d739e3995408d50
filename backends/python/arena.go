package python

import (
	"fmt"
	"sort"
	"sync"

	"golang.org/x/sys/unix"
)

// chunkAlign is the alignment of every chunk, on both sides (PROTOCOL.md).
const chunkAlign = 64

// allocator hands out chunks of one segment: first fit over a free list
// sorted by offset, neighbours coalesced on free. It is not safe for
// concurrent use; arena guards it.
type allocator struct {
	size int64
	free []span          // sorted by off, never adjacent
	used map[int64]int64 // off → length of each chunk handed out
}

type span struct{ off, n int64 }

func newAllocator(size int64) *allocator {
	return &allocator{size: size, free: []span{{0, size}}, used: map[int64]int64{}}
}

func alignUp(n int64) int64 { return (n + chunkAlign - 1) &^ (chunkAlign - 1) }

// alloc returns the offset of a chunk of n bytes (n > 0), or false when no
// free span is large enough.
func (a *allocator) alloc(n int64) (int64, bool) {
	n = alignUp(n)
	for i, s := range a.free {
		if s.n < n {
			continue
		}
		if s.n == n {
			a.free = append(a.free[:i], a.free[i+1:]...)
		} else {
			a.free[i] = span{s.off + n, s.n - n}
		}
		a.used[s.off] = n
		return s.off, true
	}
	return 0, false
}

// release frees the chunk at off; an offset that is not a chunk is an
// error (the peer named a chunk it was never given, or freed one twice).
func (a *allocator) release(off int64) error {
	n, ok := a.used[off]
	if !ok {
		return fmt.Errorf("no chunk at offset %d", off)
	}
	delete(a.used, off)
	i := sort.Search(len(a.free), func(i int) bool { return a.free[i].off > off })
	s := span{off, n}
	// Merge with the following span, then with the preceding one.
	if i < len(a.free) && s.off+s.n == a.free[i].off {
		s.n += a.free[i].n
		a.free = append(a.free[:i], a.free[i+1:]...)
	}
	if i > 0 && a.free[i-1].off+a.free[i-1].n == s.off {
		a.free[i-1].n += s.n
		return nil
	}
	a.free = append(a.free, span{})
	copy(a.free[i+1:], a.free[i:])
	a.free[i] = s
	return nil
}

// empty reports whether no chunk is handed out.
func (a *allocator) empty() bool { return len(a.used) == 0 }

// segment is one anonymous shared-memory file mapped into this process.
type segment struct {
	id  int
	mem []byte
}

// newSegment creates a sealed memory file of size bytes and maps it
// read-write; fd is the file to send to the stub, which the caller closes
// once sent.
func newSegment(id int, size int64) (*segment, int, error) {
	fd, err := unix.MemfdCreate(fmt.Sprintf("nereid-python-%d", id), unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, -1, fmt.Errorf("shared memory for a Python stub: memfd_create: %w", err)
	}
	fail := func(what string, err error) (*segment, int, error) {
		_ = unix.Close(fd)
		return nil, -1, fmt.Errorf("shared memory for a Python stub: %s: %w", what, err)
	}
	if err := unix.Ftruncate(fd, size); err != nil {
		return fail("ftruncate", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		return fail("seal", err)
	}
	mem, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail("mmap", err)
	}
	return &segment{id: id, mem: mem}, fd, nil
}

// mapPeerSegment maps a segment the stub created, read-only, after checking
// that it cannot shrink under the mapping (which would turn a read into a
// SIGBUS) and that it holds size bytes. It closes fd.
func mapPeerSegment(id int, fd int, size int64) (*segment, error) {
	defer unix.Close(fd)
	if size <= 0 || size > maxSegment {
		return nil, fmt.Errorf("stub segment %d: size %d out of range", id, size)
	}
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil {
		return nil, fmt.Errorf("stub segment %d: not a sealable memory file: %w", id, err)
	}
	if seals&unix.F_SEAL_SHRINK == 0 {
		return nil, fmt.Errorf("stub segment %d: not sealed against shrinking", id)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("stub segment %d: %w", id, err)
	}
	if st.Size < size {
		return nil, fmt.Errorf("stub segment %d: file holds %d bytes, %d announced", id, st.Size, size)
	}
	mem, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("stub segment %d: mmap: %w", id, err)
	}
	return &segment{id: id, mem: mem}, nil
}

func (s *segment) unmap() {
	if s.mem != nil {
		_ = unix.Munmap(s.mem)
		s.mem = nil
	}
}

// maxSegment bounds the size of one segment either side may create.
const maxSegment = 1 << 40

// arena is the parent's side of the shared memory of one stub: the
// segments it owns (inputs it sends) and the segments the stub owns
// (outputs it receives), each with its rules from PROTOCOL.md.
type arena struct {
	defaultSize, growth int64
	announce            func(id int, size int64, fd int) error // sends a seg frame
	drop                func(id int) error                     // sends a drop frame

	mu      sync.Mutex // guards the fields below
	own     []*ownSegment
	nextID  int
	peer    map[int]*peerSegment
	pending [][2]int64 // stub chunks read and released, not yet reported
	dead    bool       // the stub is gone: nothing more is sent or mapped
}

type ownSegment struct {
	*segment
	alloc *allocator
}

// peerSegment is a stub segment mapped here; refs counts the chunks of it
// that responses still carry. It is unmapped once dropped (or the stub is
// gone) and no chunk is left.
type peerSegment struct {
	*segment
	refs    int
	dropped bool
}

func newArena(defaultSize, growth int64, announce func(int, int64, int) error, drop func(int) error) *arena {
	return &arena{defaultSize: defaultSize, growth: growth, announce: announce, drop: drop, peer: map[int]*peerSegment{}}
}

// chunk is a piece of one of the parent's segments.
type chunk struct {
	seg int
	off int64
	mem []byte
}

// alloc returns a chunk of n bytes (n > 0) of the parent's memory,
// creating (and announcing) a segment when none has room.
func (a *arena) alloc(n int64) (chunk, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.dead {
		return chunk{}, errStubGone
	}
	for _, s := range a.own {
		if off, ok := s.alloc.alloc(n); ok {
			return chunk{s.id, off, s.mem[off : off+n : off+n]}, nil
		}
	}
	size := a.defaultSize
	if len(a.own) > 0 {
		size = max(a.growth, (alignUp(n)+4095)&^4095)
	}
	size = max(size, (alignUp(n)+4095)&^4095)
	seg, fd, err := newSegment(a.nextID, size)
	if err != nil {
		return chunk{}, err
	}
	a.nextID++
	err = a.announce(seg.id, size, fd)
	_ = unix.Close(fd)
	if err != nil {
		seg.unmap()
		return chunk{}, err
	}
	s := &ownSegment{seg, newAllocator(size)}
	a.own = append(a.own, s)
	off, _ := s.alloc.alloc(n)
	return chunk{s.id, off, s.mem[off : off+n : off+n]}, nil
}

// release frees chunks of the parent's segments that the stub reported
// done. It drops a segment that became empty when another empty one
// (besides the first) is kept already, so the arena shrinks back after a
// burst of large tensors without churning on a steady stream of them.
func (a *arena) release(frees [][2]int64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var firstErr error
	for _, f := range frees {
		i := a.ownIndexLocked(int(f[0]))
		if i < 0 {
			firstErr = cmpErr(firstErr, fmt.Errorf("stub freed a chunk of unknown segment %d", f[0]))
			continue
		}
		s := a.own[i]
		if err := s.alloc.release(f[1]); err != nil {
			firstErr = cmpErr(firstErr, fmt.Errorf("stub freed segment %d: %w", s.id, err))
			continue
		}
		if i > 0 && s.alloc.empty() {
			a.shrinkLocked(s)
		}
	}
	return firstErr
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

func (a *arena) ownIndexLocked(id int) int {
	for i, s := range a.own {
		if s.id == id {
			return i
		}
	}
	return -1
}

// shrinkLocked keeps at most one empty segment besides the first: the
// larger of s and another empty one.
func (a *arena) shrinkLocked(s *ownSegment) {
	for _, o := range a.own[1:] {
		if o == s || !o.alloc.empty() {
			continue
		}
		victim := o
		if s.alloc.size < o.alloc.size {
			victim = s
		}
		if a.drop(victim.id) != nil {
			return // the stub is going; its segments go with it
		}
		a.own = removeSegment(a.own, victim)
		victim.unmap()
		return
	}
}

func removeSegment(ss []*ownSegment, s *ownSegment) []*ownSegment {
	for i, o := range ss {
		if o == s {
			return append(ss[:i], ss[i+1:]...)
		}
	}
	return ss
}

// addPeer maps a segment the stub announced.
func (a *arena) addPeer(id int, fd int, size int64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, dup := a.peer[id]; dup {
		_ = unix.Close(fd)
		return fmt.Errorf("stub announced segment %d twice", id)
	}
	seg, err := mapPeerSegment(id, fd, size)
	if err != nil {
		return err
	}
	a.peer[id] = &peerSegment{segment: seg}
	return nil
}

// dropPeer forgets a stub segment; its mapping goes once no response
// carries a chunk of it.
func (a *arena) dropPeer(id int) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.peer[id]
	if !ok {
		return fmt.Errorf("stub dropped unknown segment %d", id)
	}
	p.dropped = true
	delete(a.peer, id)
	if p.refs == 0 {
		p.unmap()
	}
	return nil
}

// peerChunk is a chunk of a stub segment that the parent reads.
type peerChunk struct {
	seg *peerSegment
	off int64
}

// view returns the bytes of a stub chunk named by a descriptor, holding
// the segment mapped until the chunk is released.
func (a *arena) view(seg int, off, n int64) ([]byte, peerChunk, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.peer[seg]
	if !ok {
		return nil, peerChunk{}, fmt.Errorf("segment %d was never announced", seg)
	}
	if off < 0 || n < 0 || off > int64(len(p.mem)) || n > int64(len(p.mem))-off {
		return nil, peerChunk{}, fmt.Errorf("bytes [%d, %d) lie outside segment %d of %d bytes", off, off+n, seg, len(p.mem))
	}
	p.refs++
	return p.mem[off : off+n : off+n], peerChunk{p, off}, nil
}

// releasePeer gives back stub chunks: they are reported to the stub with
// the next frame the parent sends (takeFrees), and a dropped segment is
// unmapped with its last chunk.
func (a *arena) releasePeer(cs []peerChunk) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range cs {
		c.seg.refs--
		if c.seg.dropped {
			if c.seg.refs == 0 {
				c.seg.unmap()
			}
			continue
		}
		a.pending = append(a.pending, [2]int64{int64(c.seg.id), c.off})
	}
}

// takeFrees returns the stub chunks to report, and forgets them.
func (a *arena) takeFrees() [][2]int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.pending) == 0 {
		return nil
	}
	f := a.pending
	a.pending = nil
	return f
}

// pendingFrees counts the stub chunks waiting to be reported.
func (a *arena) pendingFrees() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.pending)
}

// close ends the arena when its stub is gone: the parent's segments are
// unmapped (nothing reads them any more), the stub's stay mapped while a
// response still carries a chunk of them.
func (a *arena) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.dead = true
	for _, s := range a.own {
		s.unmap()
	}
	a.own = nil
	for id, p := range a.peer {
		p.dropped = true
		if p.refs == 0 {
			p.unmap()
		}
		delete(a.peer, id)
	}
	a.pending = nil
}
