package grpcfront

import (
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
)

// Compression in both directions, as tritonclient's compression_algorithm
// asks: gzip and deflate, which gRPC defines as the zlib format. A
// compressed request is answered compressed the same way; received
// messages are bounded after decompression by MaxMessageSize, so a small
// compressed message cannot inflate past it.

func init() {
	encoding.RegisterCompressor(gzipCompressor{})
	encoding.RegisterCompressor(deflateCompressor{})
}

// gzipLevel is the level responses are gzip-compressed at
// (--grpc-infer-response-compression-level; gzip's default otherwise).
var gzipLevel atomic.Int32

func init() { gzipLevel.Store(int32(gzip.DefaultCompression)) }

type gzipCompressor struct{}

// leveledGzip is a pooled writer and the level it was made with.
type leveledGzip struct {
	*gzip.Writer
	level int
}

var (
	gzipWriters sync.Pool
	gzipReaders sync.Pool
)

func (gzipCompressor) Name() string { return "gzip" }

func (gzipCompressor) Compress(w io.Writer) (io.WriteCloser, error) {
	level := int(gzipLevel.Load())
	if gw, ok := gzipWriters.Get().(*leveledGzip); ok && gw.level == level {
		gw.Reset(w)
		return gw, nil
	}
	zw, err := gzip.NewWriterLevel(w, level)
	if err != nil {
		return nil, err
	}
	return &leveledGzip{Writer: zw, level: level}, nil
}

func (g *leveledGzip) Close() error {
	err := g.Writer.Close()
	gzipWriters.Put(g)
	return err
}

func (gzipCompressor) Decompress(r io.Reader) (io.Reader, error) {
	if zr, ok := gzipReaders.Get().(*gzip.Reader); ok {
		if err := zr.Reset(r); err != nil {
			gzipReaders.Put(zr)
			return nil, err
		}
		return &pooledReader{rc: zr, pool: &gzipReaders}, nil
	}
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, err
	}
	return &pooledReader{rc: zr, pool: &gzipReaders}, nil
}

type deflateCompressor struct{}

var (
	zlibWriters sync.Pool
	zlibReaders sync.Pool
)

func (deflateCompressor) Name() string { return "deflate" }

func (deflateCompressor) Compress(w io.Writer) (io.WriteCloser, error) {
	if zw, ok := zlibWriters.Get().(*zlib.Writer); ok {
		zw.Reset(w)
		return pooledZlibWriter{zw}, nil
	}
	zw, err := zlib.NewWriterLevel(w, flate.DefaultCompression)
	if err != nil {
		return nil, err
	}
	return pooledZlibWriter{zw}, nil
}

type pooledZlibWriter struct{ *zlib.Writer }

func (p pooledZlibWriter) Close() error {
	err := p.Writer.Close()
	zlibWriters.Put(p.Writer)
	return err
}

func (deflateCompressor) Decompress(r io.Reader) (io.Reader, error) {
	if zr, ok := zlibReaders.Get().(io.ReadCloser); ok {
		if err := zr.(zlib.Resetter).Reset(r, nil); err != nil {
			zlibReaders.Put(zr)
			return nil, err
		}
		return &pooledReader{rc: zr, pool: &zlibReaders}, nil
	}
	zr, err := zlib.NewReader(r)
	if err != nil {
		return nil, err
	}
	return &pooledReader{rc: zr, pool: &zlibReaders}, nil
}

// pooledReader returns its decompressor to its pool at the end of the
// stream.
type pooledReader struct {
	rc   io.Reader
	pool *sync.Pool
}

func (p *pooledReader) Read(b []byte) (int, error) {
	if p.rc == nil {
		return 0, io.EOF
	}
	n, err := p.rc.Read(b)
	if err == io.EOF {
		p.pool.Put(p.rc)
		p.rc = nil
	}
	return n, err
}

// ResponseCompressionLevels are the values of
// --grpc-infer-response-compression-level, in Triton's words, with the gzip
// level each stands for.
var ResponseCompressionLevels = map[string]int{
	"none":   0,
	"low":    gzip.BestSpeed,
	"medium": gzip.DefaultCompression,
	"high":   gzip.BestCompression,
}

// responseCompressor is set up from --grpc-infer-response-compression-level:
// inference responses go out gzip-compressed, at that level, to every
// client that accepts gzip, whatever its request used. "" when the level
// is none.
func responseCompressor(level string) (string, error) {
	l, ok := ResponseCompressionLevels[level]
	switch {
	case level == "" || level == "none":
		return "", nil
	case !ok:
		return "", fmt.Errorf("unknown response compression level '%s' (none, low, medium or high)", level)
	}
	gzipLevel.Store(int32(l))
	return "gzip", nil
}

// compressResponse asks for the server's response compression on an
// inference call whose client accepts it. Without a level, a compressed
// request is answered the same way (grpc-go's default).
func compressResponse(ctx context.Context, name string) {
	if name == "" {
		return
	}
	accepted, err := grpc.ClientSupportedCompressors(ctx)
	if err != nil || !slices.Contains(accepted, name) {
		return
	}
	_ = grpc.SetSendCompressor(ctx, name)
}
