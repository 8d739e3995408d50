package payload

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/nereid-project/nereid/inference"
)

// FuzzInflate feeds arbitrary bytes, as gzip or zlib, to Inflate under a
// small limit and budget. It must agree with the standard library's
// decoder read to one byte past the limit: the same bytes when the data
// decodes within the limit, ErrInflateLimit when it decodes past it,
// InvalidArg (or the budget's Unavailable) otherwise; never more than the
// limit delivered, and the budget and the decompression slots all given
// back.
func FuzzInflate(f *testing.F) {
	const limit = 64 << 10
	for _, data := range [][]byte{nil, []byte("nereid"), bytes.Repeat([]byte{0}, limit), bytes.Repeat([]byte("ab"), limit)} {
		var gz, zl bytes.Buffer
		gw := gzip.NewWriter(&gz)
		_, _ = gw.Write(data)
		_ = gw.Close()
		zw := zlib.NewWriter(&zl)
		_, _ = zw.Write(data)
		_ = zw.Close()
		f.Add(false, gz.Bytes())
		f.Add(true, zl.Bytes())
		f.Add(false, gz.Bytes()[:gz.Len()/2])
	}
	f.Add(true, []byte("not zlib"))
	f.Fuzz(func(t *testing.T, useZlib bool, src []byte) {
		format, ref := Gzip, func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) }
		if useZlib {
			format, ref = Zlib, func(r io.Reader) (io.Reader, error) { return zlib.NewReader(r) }
		}
		var want []byte
		var wantErr error
		if zr, err := ref(bytes.NewReader(src)); err != nil {
			wantErr = err
		} else {
			want, wantErr = io.ReadAll(io.LimitReader(zr, limit+1))
		}
		// Past the limit: the reference produced more than limit bytes,
		// whether or not the stream turned out corrupt after them (a
		// reader stops at the limit before it sees that).
		over := len(want) > limit

		budget := NewBudget(4*limit, nil)
		got, err := Inflate(context.Background(), format, src, limit, budget)
		switch {
		case err == nil:
			if wantErr != nil || over {
				t.Fatalf("accepted %d bytes; the reference: %d bytes, %v", len(got.Bytes), len(want), wantErr)
			}
			if !bytes.Equal(got.Bytes, want) {
				t.Fatalf("got %d bytes, the reference %d, different", len(got.Bytes), len(want))
			}
			got.Release()
		case errors.Is(err, ErrInflateLimit):
			if !over {
				t.Fatalf("refused for the limit; the reference: %d bytes, %v", len(want), wantErr)
			}
		case inference.CodeOf(err) == inference.CodeInvalidArg:
			if wantErr == nil {
				t.Fatalf("refused as invalid (%v); the reference decodes %d bytes", err, len(want))
			}
		default:
			t.Fatalf("unexpected error %v", err)
		}
		if budget.InUse() != 0 || len(inflateSlots) != 0 {
			t.Fatalf("%d bytes left in the budget, %d slots held", budget.InUse(), len(inflateSlots))
		}
	})
}
