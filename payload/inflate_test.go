package payload

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/nereid-project/nereid/inference"
)

func compress(t testing.TB, f Format, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	var w io.WriteCloser
	if f == Gzip {
		w = gzip.NewWriter(&b)
	} else {
		w = zlib.NewWriter(&b)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestInflateRoundTripAndCharge(t *testing.T) {
	for _, f := range []Format{Gzip, Zlib} {
		for _, size := range []int{0, 1, 1000, 3 << 20, 5 << 20} {
			data := bytes.Repeat([]byte("nereid "), size/7+1)[:size]
			b := NewBudget(0, nil)
			d, err := Inflate(context.Background(), f, compress(t, f, data), 5<<20, b)
			if err != nil {
				t.Fatalf("%v %d bytes: %v", f, size, err)
			}
			if !bytes.Equal(d.Bytes, data) {
				t.Fatalf("%v %d bytes: got %d different bytes", f, size, len(d.Bytes))
			}
			if b.InUse() != int64(size) {
				t.Fatalf("%v %d bytes: budget holds %d while the body is held", f, size, b.InUse())
			}
			d.Release()
			d.Release()
			if b.InUse() != 0 {
				t.Fatalf("%v: budget holds %d after Release", f, b.InUse())
			}
		}
	}
}

func TestInflateLimitIsExact(t *testing.T) {
	const limit = LargeSize + 10
	for _, f := range []Format{Gzip, Zlib} {
		at := make([]byte, limit)
		if _, err := Inflate(context.Background(), f, compress(t, f, at), limit, nil); err != nil {
			t.Fatalf("%v: a body of exactly the limit: %v", f, err)
		}
		over := make([]byte, limit+1)
		b := NewBudget(0, nil)
		_, err := Inflate(context.Background(), f, compress(t, f, over), limit, b)
		if !errors.Is(err, ErrInflateLimit) {
			t.Fatalf("%v: one byte over the limit: %v, want ErrInflateLimit", f, err)
		}
		if b.InUse() != 0 {
			t.Fatalf("%v: a refused body left %d bytes in the budget", f, b.InUse())
		}
	}
}

// bomb is a few KB of gzip that inflates to 8 MiB of zeros.
func bomb(t testing.TB) []byte {
	t.Helper()
	var b bytes.Buffer
	w, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
	zero := make([]byte, 1<<20)
	for range 8 {
		if _, err := w.Write(zero); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// Many bombs at once: decompression runs InflateConcurrency at a time, so
// a budget of that many limits is never exceeded (a refusal from it would
// show more running at once), each is refused at its limit, and everything
// goes back to the budget.
func TestInflateBombsAreBoundedBySlotsAndBudget(t *testing.T) {
	const limit = LargeSize
	src := bomb(t)
	b := NewBudget(int64(InflateConcurrency())*limit, nil)
	var wg sync.WaitGroup
	errs := make([]error, 24)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = Inflate(context.Background(), Gzip, src, limit, b)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, ErrInflateLimit) {
			t.Fatalf("bomb %d: %v, want ErrInflateLimit", i, err)
		}
	}
	if b.InUse() != 0 || len(inflateSlots) != 0 {
		t.Fatalf("after the bombs: %d bytes in the budget, %d slots held", b.InUse(), len(inflateSlots))
	}
}

func TestInflateBudgetRefuses(t *testing.T) {
	b := NewBudget(2<<20, nil)
	_, err := Inflate(context.Background(), Gzip, bomb(t), 64<<20, b)
	var ie *inference.Error
	if !errors.As(err, &ie) || ie.Code != inference.CodeUnavailable || !strings.Contains(err.Error(), "--payload-budget-bytes") {
		t.Fatalf("a bomb over the budget: %v, want Unavailable naming the budget", err)
	}
	if b.InUse() != 0 {
		t.Fatalf("%d bytes left in the budget", b.InUse())
	}
	// A body that fits in the budget only without its staging copy does
	// not fit: both are charged.
	data := make([]byte, 1500<<10)
	if _, err := Inflate(context.Background(), Zlib, compress(t, Zlib, data), 64<<20, b); err == nil {
		t.Fatal("a body charged twice over the budget was accepted")
	}
	if b.InUse() != 0 {
		t.Fatalf("%d bytes left in the budget", b.InUse())
	}
}

func TestInflateBadData(t *testing.T) {
	good := compress(t, Gzip, []byte(strings.Repeat("x", 10000)))
	for name, src := range map[string][]byte{
		"not gzip":  []byte("plain text"),
		"truncated": good[:len(good)/2],
		"empty":     nil,
	} {
		b := NewBudget(0, nil)
		_, err := Inflate(context.Background(), Gzip, src, 1<<20, b)
		var ie *inference.Error
		if !errors.As(err, &ie) || ie.Code != inference.CodeInvalidArg {
			t.Errorf("%s: %v, want InvalidArg", name, err)
		}
		if b.InUse() != 0 {
			t.Errorf("%s: %d bytes left in the budget", name, b.InUse())
		}
	}
	if len(inflateSlots) != 0 {
		t.Fatalf("%d slots held", len(inflateSlots))
	}
}

func TestInflateWaitsForASlot(t *testing.T) {
	for range cap(inflateSlots) {
		inflateSlots <- struct{}{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Inflate(ctx, Gzip, compress(t, Gzip, []byte("x")), 100, nil)
	for range cap(inflateSlots) {
		<-inflateSlots
	}
	if inference.CodeOf(err) != inference.CodeUnavailable || !strings.Contains(err.Error(), "busy decompressing") {
		t.Fatalf("no slot and the context ended: %v", err)
	}
}

// The reader gRPC uses delivers up to its max (the message limit plus one,
// which lets grpc-go tell an over-long message) and holds that charge until
// Close.
func TestInflateReaderChargeUntilClose(t *testing.T) {
	b := NewBudget(0, nil)
	data := make([]byte, 3<<20)
	r := NewInflateReader(context.Background(), bytes.NewReader(compress(t, Zlib, data)), Zlib, 1<<20+1, b)
	got, err := io.ReadAll(io.LimitReader(r, 1<<20+1))
	if err != nil || len(got) != 1<<20+1 {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	if b.InUse() < int64(len(got)) || b.InUse() > 2*int64(len(got)) {
		t.Fatalf("budget holds %d for %d bytes delivered", b.InUse(), len(got))
	}
	if _, err := r.Read(make([]byte, 10)); !errors.Is(err, ErrInflateLimit) {
		t.Fatalf("reading past max: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	_ = r.Close()
	if b.InUse() != 0 || len(inflateSlots) != 0 {
		t.Fatalf("budget holds %d, %d slots held after Close", b.InUse(), len(inflateSlots))
	}
	// Closed before any read: nothing was taken.
	r = NewInflateReader(context.Background(), bytes.NewReader(nil), Gzip, 10, b)
	_ = r.Close()
	if b.InUse() != 0 || len(inflateSlots) != 0 {
		t.Fatal("an unread reader took something")
	}
}
