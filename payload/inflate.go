package payload

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/nereid-project/nereid/inference"
)

// Decompression of request bodies and messages. A few kilobytes of gzip can
// inflate to gigabytes, so decompressed bytes are bounded three ways:
//
//   - a limit per body (the front end's input limit): decompression stops
//     one byte past it, and the stream is refused without reading further;
//   - the payload budget: every decompressed byte held is charged to it as it
//     is produced (in steps of inflateChargeStep), so bodies being inflated
//     count like any other payload and one that does not fit is refused;
//   - a process-wide cap on decompressions running at once (inflateSlots, as
//     many as there are CPUs, since the work is CPU-bound): the memory a
//     burst of bombs can take at once is that many limits, whatever the
//     number of clients; the others wait for a slot.
//
// Inflate decompresses into an anonymous mapping sized for the limit, of
// which only the pages written are resident, and unmaps it once the body is
// refused or copied out, so a refused bomb's memory leaves the process at
// once instead of waiting for the collector.

// Format is the compressed format of a body or message.
type Format int

// The formats front ends accept: gzip (RFC 1952), and zlib (RFC 1950),
// which HTTP's and gRPC's "deflate" both mean.
const (
	Gzip Format = iota + 1
	Zlib
)

func (f Format) String() string {
	switch f {
	case Gzip:
		return "gzip"
	case Zlib:
		return "deflate"
	default:
		return fmt.Sprintf("Format(%d)", int(f))
	}
}

// ErrInflateLimit is behind the error for a body that decompresses past its
// limit. Front ends test for it with errors.Is and name their own flag.
var ErrInflateLimit = errors.New("decompressed data exceeds the size limit")

// inflateChargeStep is the granularity at which decompressed bytes are
// charged to the budget: small enough that the charge follows the memory,
// large enough that the budget's counter is not touched for every read.
const inflateChargeStep = 1 << 20

// inflateSlotWait bounds how long a decompression waits for a slot when its
// caller has no context (gRPC's decompressor interface has none).
const inflateSlotWait = 30 * time.Second

// inflateSlots is the process-wide semaphore of decompressions in progress.
var inflateSlots = make(chan struct{}, max(2, runtime.GOMAXPROCS(0)))

// InflateConcurrency is how many decompressions may run at once.
func InflateConcurrency() int { return cap(inflateSlots) }

func acquireInflateSlot(ctx context.Context) error {
	select {
	case inflateSlots <- struct{}{}:
		return nil
	default:
	}
	select {
	case inflateSlots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return inference.Unavailable("the server is busy decompressing other requests (%d at a time); retry later: %v", cap(inflateSlots), ctx.Err())
	}
}

func releaseInflateSlot() { <-inflateSlots }

// Pools of decompressors; at most InflateConcurrency of them are in use at
// once, so the pools stay that small.
var (
	gzipReaders sync.Pool // *gzip.Reader
	zlibReaders sync.Pool // io.ReadCloser that is a zlib.Resetter
)

// newDecompressor returns a pooled decompressor of f reading src; put it
// back with putDecompressor.
func newDecompressor(f Format, src io.Reader) (io.Reader, error) {
	switch f {
	case Gzip:
		if zr, ok := gzipReaders.Get().(*gzip.Reader); ok {
			if err := zr.Reset(src); err != nil {
				gzipReaders.Put(zr)
				return nil, err
			}
			return zr, nil
		}
		return gzip.NewReader(src)
	case Zlib:
		if zr, ok := zlibReaders.Get().(io.ReadCloser); ok {
			if err := zr.(zlib.Resetter).Reset(src, nil); err != nil {
				zlibReaders.Put(zr)
				return nil, err
			}
			return zr, nil
		}
		return zlib.NewReader(src)
	default:
		return nil, fmt.Errorf("unsupported compression format %v", f)
	}
}

func putDecompressor(f Format, zr io.Reader) {
	switch f {
	case Gzip:
		gzipReaders.Put(zr)
	case Zlib:
		zlibReaders.Put(zr)
	}
}

// InflateReader decompresses a stream, delivering at most max bytes: a
// stream with more fails with ErrInflateLimit instead of delivering the
// excess. The bytes it has delivered are charged to its budget until Close,
// on the assumption that the caller holds them until then; a delivery that
// does not fit fails with the budget's Unavailable error. It holds one of
// the process's decompression slots from its first Read until Close,
// waiting for one until ctx ends, so that the memory decompressions hold
// at once is bounded by InflateConcurrency times their limit.
//
// Close must be called once the caller is done with what it read (a reader
// never closed keeps its slot); it is safe to call more than once. An InflateReader is not safe for concurrent use.
type InflateReader struct {
	ctx    context.Context //nolint:containedctx // bounds the wait for a slot, which the first Read makes
	src    io.Reader
	format Format
	max    int64
	budget *Budget

	zr        io.Reader // nil until the first Read, and after the end
	slot      bool
	delivered int64
	charged   int64
	err       error // sticky: the end of the stream or the failure
}

// NewInflateReader returns a reader of src's decompressed bytes, at most
// maxBytes of them, charged to budget (which may be nil: no cap). The wait
// for a decompression slot ends with ctx, and after 30 s at most.
func NewInflateReader(ctx context.Context, src io.Reader, f Format, maxBytes int64, budget *Budget) *InflateReader {
	return &InflateReader{ctx: ctx, src: src, format: f, max: maxBytes, budget: budget}
}

// Charged is the number of bytes the reader holds in its budget.
func (r *InflateReader) Charged() int64 { return r.charged }

func (r *InflateReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.zr == nil {
		wait, cancel := context.WithTimeout(r.ctx, inflateSlotWait)
		err := acquireInflateSlot(wait)
		cancel()
		if err != nil {
			return 0, r.fail(err)
		}
		r.slot = true
		zr, err := newDecompressor(r.format, r.src)
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF // no header: not an empty stream
		}
		if err != nil {
			return 0, r.fail(fmt.Errorf("invalid %v data: %w", r.format, err))
		}
		r.zr = zr
	}
	if len(p) == 0 {
		return 0, nil
	}
	if r.delivered == r.max {
		// One byte more tells a stream that ends here from one that goes
		// on.
		var one [1]byte
		n, err := io.ReadFull(r.zr, one[:])
		if n > 0 {
			return 0, r.fail(ErrInflateLimit)
		}
		if errors.Is(err, io.EOF) {
			return 0, r.finish(io.EOF)
		}
		return 0, r.fail(fmt.Errorf("invalid %v data: %w", r.format, err))
	}
	if r.delivered == r.charged {
		// Charged before the bytes are written: from 32 KiB, doubling
		// up to inflateChargeStep, never past max.
		step := min(max(r.charged, 32<<10), inflateChargeStep, r.max-r.charged)
		if err := r.budget.Acquire(step); err != nil {
			return 0, r.fail(err)
		}
		r.charged += step
	}
	if room := r.charged - r.delivered; int64(len(p)) > room {
		p = p[:room]
	}
	n, err := r.zr.Read(p)
	r.delivered += int64(n)
	switch {
	case err == nil:
		return n, nil
	case errors.Is(err, io.EOF):
		return n, r.finish(io.EOF)
	default:
		return n, r.fail(fmt.Errorf("invalid %v data: %w", r.format, err))
	}
}

// finish ends the stream: the decompressor goes back; the charge and the
// slot stay until Close, since the caller still holds what was delivered.
func (r *InflateReader) finish(err error) error {
	r.err = err
	if r.zr != nil {
		putDecompressor(r.format, r.zr)
		r.zr = nil
	}
	return err
}

// fail ends the stream with err; a decompressor in an unknown state is
// dropped, not pooled.
func (r *InflateReader) fail(err error) error {
	r.zr = nil
	return r.finish(err)
}

// Close ends the stream if it has not ended and releases the charge.
func (r *InflateReader) Close() error {
	if r.err == nil {
		_ = r.fail(errInflateClosed)
	}
	if r.charged > 0 {
		r.budget.Release(r.charged)
		r.charged = 0
	}
	if r.slot {
		releaseInflateSlot()
		r.slot = false
	}
	return nil
}

var errInflateClosed = errors.New("payload: read after Close")

// Inflated is a decompressed body. Bytes are valid until Release, which
// gives its memory back to the budget; they are ordinary heap memory, so a
// backend that still reads them after Release (a cancelled request) is safe.
type Inflated struct {
	Bytes  []byte
	budget *Budget
	n      int64
}

// Release returns the body's bytes to the budget. A nil *Inflated is a
// no-op; a second Release is one too.
func (d *Inflated) Release() {
	if d == nil || d.n == 0 {
		return
	}
	d.budget.Release(d.n)
	d.n = 0
}

// Inflate decompresses src, a whole body in format f, into a new buffer of
// at most limit bytes charged to budget (nil: no cap). It fails with an
// error wrapping ErrInflateLimit when the body decompresses past limit, the
// budget's Unavailable error when it does not fit, an Unavailable error when
// ctx ends while it waits for a decompression slot, and an InvalidArg error
// when src is not valid data of f.
//
// While it runs, it holds at most limit+1 bytes of staging memory (only the
// pages written are resident) and, at the end, the body a second time for
// the moment of the copy; both are charged to budget.
func Inflate(ctx context.Context, f Format, src []byte, limit int, budget *Budget) (*Inflated, error) {
	if limit < 0 {
		limit = 0
	}
	zr := NewInflateReader(ctx, bytes.NewReader(src), f, int64(limit), budget)
	defer zr.Close()
	stage := mapStaging(limit)
	defer stage.free()
	n := 0
	for {
		if n == len(stage.b) {
			// Only a heap staging buffer (mapping failed) is this short.
			stage.grow(limit)
		}
		k, err := zr.Read(stage.b[n:])
		n += k
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, inflateError(f, err)
		}
	}
	// The body, once more, as heap memory of its exact size: the staging
	// mapping leaves the process at once, and the body's own memory needs
	// no one to unmap it.
	if err := budget.Acquire(int64(n)); err != nil {
		return nil, err
	}
	out := &Inflated{Bytes: make([]byte, n), budget: budget, n: int64(n)}
	copy(out.Bytes, stage.b[:n])
	return out, nil
}

func inflateError(f Format, err error) error {
	var ie *inference.Error
	switch {
	case errors.Is(err, ErrInflateLimit):
		return err
	case errors.As(err, &ie):
		return err
	default:
		return inference.Errorf(inference.CodeInvalidArg, "failed to decompress the %v data: %w", f, err)
	}
}

// staging is Inflate's scratch buffer: an anonymous mapping, or a heap
// slice where mapping fails.
type staging struct {
	b      []byte
	mapped bool
}

func mapStaging(limit int) staging {
	size := limit + 1 // room for the byte that shows the stream goes on
	if size < LargeSize {
		return staging{b: make([]byte, min(size, 64<<10))}
	}
	b, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE,
		syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_NORESERVE)
	if err != nil {
		return staging{b: make([]byte, 64<<10)}
	}
	return staging{b: b, mapped: true}
}

// grow doubles a heap staging buffer, up to limit+1 bytes.
func (s *staging) grow(limit int) {
	nb := make([]byte, min(2*len(s.b), limit+1))
	copy(nb, s.b)
	s.b = nb
}

func (s *staging) free() {
	if s.mapped {
		_ = syscall.Munmap(s.b)
	}
	s.b = nil
}
