package python

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"sort"
	"testing"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The allocator against a model of it: random allocations and frees never
// overlap, stay inside the segment, are aligned, and coalesce back to one
// free span when everything is freed.
func TestAllocatorRandom(t *testing.T) {
	const size = 1 << 16
	a := newAllocator(size)
	r := rand.New(rand.NewPCG(1, 2))
	live := map[int64]int64{}
	for range 20000 {
		if len(live) > 0 && r.IntN(3) == 0 {
			for off := range live {
				if err := a.release(off); err != nil {
					t.Fatal(err)
				}
				delete(live, off)
				break
			}
			continue
		}
		n := int64(1 + r.IntN(4000))
		off, ok := a.alloc(n)
		if !ok {
			continue
		}
		if off%chunkAlign != 0 || off+n > size {
			t.Fatalf("chunk [%d,+%d) misaligned or outside the segment", off, n)
		}
		live[off] = alignUp(n)
		checkDisjoint(t, live)
	}
	for off := range live {
		if err := a.release(off); err != nil {
			t.Fatal(err)
		}
	}
	if !a.empty() || len(a.free) != 1 || a.free[0] != (span{0, size}) {
		t.Fatalf("after freeing everything: free list %v", a.free)
	}
}

func checkDisjoint(t *testing.T, live map[int64]int64) {
	t.Helper()
	offs := make([]int64, 0, len(live))
	for o := range live {
		offs = append(offs, o)
	}
	sort.Slice(offs, func(i, j int) bool { return offs[i] < offs[j] })
	for i := 1; i < len(offs); i++ {
		if offs[i-1]+live[offs[i-1]] > offs[i] {
			t.Fatalf("chunks at %d and %d overlap", offs[i-1], offs[i])
		}
	}
}

func TestAllocatorRefusesBadFrees(t *testing.T) {
	a := newAllocator(4096)
	off, _ := a.alloc(100)
	if err := a.release(off + 64); err == nil {
		t.Error("freeing inside a chunk was accepted")
	}
	if err := a.release(off); err != nil {
		t.Fatal(err)
	}
	if err := a.release(off); err == nil {
		t.Error("a double free was accepted")
	}
}

// The arena grows by segments it announces, and gives back an empty one
// beyond the first when another empty one is kept.
func TestArenaGrowsAndShrinks(t *testing.T) {
	var announced, dropped []int
	a := newArena(4096, 8192,
		func(id int, size int64, fd int) error { announced = append(announced, id); return nil },
		func(id int) error { dropped = append(dropped, id); return nil })
	defer a.close()
	c1, err := a.alloc(4096)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := a.alloc(12288) // no room: a second segment, sized to fit
	if err != nil {
		t.Fatal(err)
	}
	c3, err := a.alloc(100) // a third
	if err != nil {
		t.Fatal(err)
	}
	copy(c2.mem, bytes.Repeat([]byte{7}, len(c2.mem)))
	if len(announced) != 3 || c1.seg == c2.seg || c2.seg == c3.seg {
		t.Fatalf("announced %v; chunks in segments %d %d %d", announced, c1.seg, c2.seg, c3.seg)
	}
	if err := a.release([][2]int64{{int64(c2.seg), c2.off}}); err != nil {
		t.Fatal(err)
	}
	if len(dropped) != 0 {
		t.Fatalf("dropped %v with only one empty segment", dropped)
	}
	if err := a.release([][2]int64{{int64(c3.seg), c3.off}}); err != nil {
		t.Fatal(err)
	}
	if len(dropped) != 1 || dropped[0] != c3.seg {
		t.Fatalf("dropped %v, want the smaller empty segment %d", dropped, c3.seg)
	}
	if err := a.release([][2]int64{{99, 0}}); err == nil {
		t.Error("a free in an unknown segment was accepted")
	}
}

// A peer segment must be sealed against shrinking, or reading it could
// raise SIGBUS; bounds are checked on every view.
func TestPeerSegmentChecks(t *testing.T) {
	a := newArena(4096, 4096, func(int, int64, int) error { return nil }, func(int) error { return nil })
	defer a.close()

	unsealed, err := unix.MemfdCreate("unsealed", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(unsealed, 4096); err != nil {
		t.Fatal(err)
	}
	if err := a.addPeer(1, unsealed, 4096); err == nil {
		t.Error("an unsealed segment was mapped")
	}

	seg, fd, err := newSegment(2, 8192)
	if err != nil {
		t.Fatal(err)
	}
	copy(seg.mem[100:], "hello")
	if err := a.addPeer(2, fd, 8192); err != nil {
		t.Fatal(err)
	}
	seg.unmap()
	v, c, err := a.view(2, 100, 5)
	if err != nil || string(v) != "hello" {
		t.Fatalf("view = %q, %v", v, err)
	}
	for _, bad := range [][2]int64{{8190, 4}, {-1, 2}, {0, 8193}, {1 << 62, 1 << 62}} {
		if _, _, err := a.view(2, bad[0], bad[1]); err == nil {
			t.Errorf("view(%d, %d) outside the segment was allowed", bad[0], bad[1])
		}
	}
	if _, _, err := a.view(3, 0, 1); err == nil {
		t.Error("view of an unannounced segment was allowed")
	}
	// Dropped while a response holds a chunk: still readable until released.
	if err := a.dropPeer(2); err != nil {
		t.Fatal(err)
	}
	if string(v) != "hello" {
		t.Fatal("a held chunk changed after its segment was dropped")
	}
	a.releasePeer([]peerChunk{c})
	if len(a.takeFrees()) != 0 {
		t.Error("a chunk of a dropped segment was reported to the stub")
	}
}

// Frames with a descriptor attached cross a real socket pair in order,
// whatever the sizes, and a frame larger than the read buffer arrives
// whole.
func TestFramesAndDescriptors(t *testing.T) {
	c, peer := connPair(t)

	big := bytes.Repeat([]byte("x"), 300<<10)
	memfd, _ := unix.MemfdCreate("fd-test", unix.MFD_CLOEXEC)
	defer unix.Close(memfd)
	go func() {
		_ = c.writeFrame(frameOf([]byte(`{"t":"free"}`)), -1)
		_ = c.writeFrame(frameOf(big), memfd)
		_ = c.writeFrame(frameOf([]byte(`{"t":"drop"}`)), -1)
	}()
	for i, want := range [][]byte{[]byte(`{"t":"free"}`), big, []byte(`{"t":"drop"}`)} {
		got, err := peer.readFrame()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("frame %d: %d bytes, want %d", i, len(got), len(want))
		}
	}
	fd, ok := peer.takeFD()
	if !ok {
		t.Fatal("the descriptor did not arrive")
	}
	_ = unix.Close(fd)
	if _, ok := peer.takeFD(); ok {
		t.Error("one descriptor was sent, two arrived")
	}
}

func TestFrameLengthChecked(t *testing.T) {
	c, peer := connPair(t)
	var hdr [4]byte
	binary.LittleEndian.PutUint32(hdr[:], maxFrame+1)
	if _, err := c.uc.Write(hdr[:]); err != nil {
		t.Fatal(err)
	}
	if _, err := peer.readFrame(); err == nil {
		t.Fatal("a frame longer than the limit was accepted")
	}
}

// connPair is both ends of a socket pair as conns, closed when the test
// ends.
func connPair(t *testing.T) (*conn, *conn) {
	t.Helper()
	c, child, err := socketPair()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.close)
	peer, err := newConnFromFile(child)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(peer.close)
	return c, peer
}

func frameOf(body []byte) []byte { return append(make([]byte, 4), body...) }

func newConnFromFile(f *os.File) (*conn, error) {
	defer f.Close()
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		return nil, err
	}
	return newConn(fd)
}

func TestDecodeMsg(t *testing.T) {
	good := []string{
		`{"t":"done","id":3,"resps":[{"out":[{"n":"OUT","dt":"FP32","sh":[2],"s":0,"o":64,"l":8}],"p":{"k":1}}]}`,
		`{"t":"infer","c":1,"model":"simple","ver":"","id":"req-1","cid":"seq","out":["OUTPUT0"],"in":[{"n":"INPUT0","dt":"BYTES","sh":[1],"s":0,"o":0,"l":9}],"dec":true}`,
		`{"t":"resp","r":9,"has":false,"final":true}`,
		`{"t":"free","fr":[[0,64],[1,0]]}`,
	}
	for _, g := range good {
		if _, err := decodeMsg([]byte(g)); err != nil {
			t.Errorf("%s: %v", g, err)
		}
	}
	m, _ := decodeMsg([]byte(good[1]))
	if len(m.Names) != 1 || m.Names[0] != "OUTPUT0" || len(m.In) != 1 {
		t.Errorf("infer decoded as %+v", m)
	}
	bad := []string{
		`{"t":"nope"}`,
		`{"t":"done","id":1,"resps":[{"out":[{"n":"O","dt":"FP32","sh":[2],"s":0,"o":0,"l":7}]}]}`, // 7 bytes for 2 floats
		`{"t":"resp","out":[{"n":"O","dt":"WAT","sh":[1],"l":1}]}`,
		`{"t":"resp","out":[{"n":"O","dt":"INT8","sh":[-1],"l":1}]}`,
		`{"t":"resp","out":[{"n":"O","dt":"INT8","sh":[1],"o":-5,"l":1}]}`,
		`[1,2]`,
	}
	for _, b := range bad {
		if _, err := decodeMsg([]byte(b)); err == nil {
			t.Errorf("%s was accepted", b)
		}
	}
}

// FuzzDecodeMsg: whatever a stub sends, the decoder returns a message or an
// error, never panics, and a message it returns holds only descriptors
// whose sizes agree with their shapes.
func FuzzDecodeMsg(f *testing.F) {
	f.Add([]byte(`{"t":"done","id":3,"resps":[{"out":[{"n":"OUT","dt":"FP32","sh":[2],"s":0,"o":64,"l":8}]}]}`))
	f.Add([]byte(`{"t":"infer","c":1,"model":"m","out":["A"],"in":[{"n":"I","dt":"BYTES","sh":[1],"l":5}]}`))
	f.Add([]byte(`{"t":"resp","r":1,"has":true,"out":[{"n":"O","dt":"INT64","sh":[4611686018427387904,4],"l":0}]}`))
	f.Add([]byte(`{"t":"call","id":1,"op":"mval","a":{"m":2}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMsg(b)
		if err != nil {
			return
		}
		for _, d := range append(append([]tensorDesc(nil), m.Out...), m.In...) {
			if checkDesc(d) != nil {
				t.Fatalf("accepted a bad descriptor %+v", d)
			}
		}
		_, _ = parseParams(m.P)
		_ = correlationParam(m.CID)
	})
}
