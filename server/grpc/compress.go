package grpcfront

import (
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"

	"github.com/nereid-project/nereid/payload"
)

// Compression in both directions, as tritonclient's compression_algorithm
// asks: gzip and deflate, which gRPC defines as the zlib format. A
// compressed request is answered compressed the same way; received
// messages are bounded after decompression by MaxMessageSize and the
// payload budget (newInflateReader), so a small compressed message cannot
// inflate past either.

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

var gzipWriters sync.Pool

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
	return newInflateReader(r, payload.Gzip), nil
}

type deflateCompressor struct{}

var zlibWriters sync.Pool

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
	return newInflateReader(r, payload.Zlib), nil
}

// inflateLimits are the message limit and the payload budget received
// messages are decompressed within. Compressors are registered for the
// whole process, so they are the last server's (New sets them); a process
// runs one gRPC front end.
type inflateLimits struct {
	maxMessageSize int
	budget         *payload.Budget
}

var currentInflateLimits atomic.Pointer[inflateLimits]

// newInflateReader decompresses a received message through
// payload.InflateReader: at most one byte more than the message limit (so
// that grpc-go, which stops reading there, answers RESOURCE_EXHAUSTED),
// charged to the payload budget until grpc-go closes the reader, and only
// as many at once as the process allows. grpc-go closes the reader once it
// has read the message into its own buffers.
func newInflateReader(r io.Reader, f payload.Format) io.Reader {
	limit, budget := int64(math.MaxInt32), (*payload.Budget)(nil)
	if l := currentInflateLimits.Load(); l != nil {
		limit, budget = int64(l.maxMessageSize), l.budget
	}
	// Decompressors get no context: the wait for a slot is bounded by
	// the reader's own timeout.
	return payload.NewInflateReader(context.Background(), r, f, limit+1, budget)
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
