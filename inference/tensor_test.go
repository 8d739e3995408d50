package inference

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"testing"
)

func TestDataTypeRoundTrip(t *testing.T) {
	for d := Bool; d <= BF16; d++ {
		got, ok := ParseDataType(d.String())
		if !ok || got != d {
			t.Errorf("ParseDataType(%q) = %v, %v; want %v", d.String(), got, ok, d)
		}
	}
	for _, bad := range []string{"", "INVALID", "fp32", "STRING", "TYPE_FP32"} {
		if _, ok := ParseDataType(bad); ok {
			t.Errorf("ParseDataType(%q) accepted", bad)
		}
	}
	if Bytes.String() != "BYTES" || Bytes.Size() != 0 || FP16.Size() != 2 || Bool.Size() != 1 || FP64.Size() != 8 {
		t.Error("wrong names or sizes")
	}
}

func TestElementCountAndByteSize(t *testing.T) {
	cases := []struct {
		shape []int64
		dt    DataType
		count int64
		size  int64
	}{
		{nil, FP32, 1, 4},
		{[]int64{2, 3}, Int32, 6, 24},
		{[]int64{0, 5}, FP64, 0, 0},
		{[]int64{-1}, FP32, -1, -1},
		{[]int64{math.MaxInt64, 2}, Uint8, -1, -1},
		{[]int64{math.MaxInt64 / 2}, FP32, math.MaxInt64 / 2, -1},
		{[]int64{4}, Bytes, 4, -1},
	}
	for _, c := range cases {
		if got := ElementCount(c.shape); got != c.count {
			t.Errorf("ElementCount(%v) = %d, want %d", c.shape, got, c.count)
		}
		if got := ByteSize(c.dt, c.shape); got != c.size {
			t.Errorf("ByteSize(%v, %v) = %d, want %d", c.dt, c.shape, got, c.size)
		}
	}
}

func TestBytesCodec(t *testing.T) {
	elems := [][]byte{[]byte("hello"), {}, {0xff, 0x00, 0xfe}, []byte("δ")}
	var buf []byte
	for _, e := range elems {
		buf = AppendBytesElement(buf, e)
	}
	got, err := SplitBytes("X", buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(elems) {
		t.Fatalf("got %d elements, want %d", len(got), len(elems))
	}
	for i := range elems {
		if !bytes.Equal(got[i], elems[i]) {
			t.Errorf("element %d = %q, want %q", i, got[i], elems[i])
		}
	}
	// A length prefix that runs past the buffer is an invalid argument.
	bad := append([]byte{}, buf...)
	bad[0] = 200
	if _, err := SplitBytes("X", bad); CodeOf(err) != CodeInvalidArg {
		t.Errorf("overrunning prefix: err = %v, want invalid argument", err)
	}
	if _, err := CountBytesElements("X", []byte{1, 0}); CodeOf(err) != CodeInvalidArg {
		t.Errorf("truncated prefix: err = %v, want invalid argument", err)
	}
}

func TestValidateData(t *testing.T) {
	two := AppendBytesElement(AppendBytesElement(nil, []byte("a")), []byte("bc"))
	cases := []struct {
		name string
		t    Tensor
		ok   bool
	}{
		{"fp32 exact", Tensor{Name: "I", DataType: FP32, Shape: []int64{2}, Data: make([]byte, 8)}, true},
		{"fp32 short", Tensor{Name: "I", DataType: FP32, Shape: []int64{2}, Data: make([]byte, 7)}, false},
		{"negative shape", Tensor{Name: "I", DataType: FP32, Shape: []int64{-2}, Data: nil}, false},
		{"invalid type", Tensor{Name: "I", DataType: Invalid, Shape: []int64{1}}, false},
		{"bytes ok", Tensor{Name: "I", DataType: Bytes, Shape: []int64{2}, Data: two}, true},
		{"bytes count mismatch", Tensor{Name: "I", DataType: Bytes, Shape: []int64{3}, Data: two}, false},
		{"overflow", Tensor{Name: "I", DataType: FP64, Shape: []int64{math.MaxInt64 / 4}}, false},
	}
	for _, c := range cases {
		err := c.t.ValidateData()
		if (err == nil) != c.ok {
			t.Errorf("%s: err = %v, want ok=%v", c.name, err, c.ok)
		}
		if err != nil && CodeOf(err) != CodeInvalidArg {
			t.Errorf("%s: code = %v, want invalid argument", c.name, CodeOf(err))
		}
	}
}

func TestErrors(t *testing.T) {
	cause := errors.New("disk on fire")
	err := Errorf(CodeInternal, "loading: %w", cause)
	if !errors.Is(err, cause) {
		t.Error("cause not reachable")
	}
	if CodeOf(err) != CodeInternal || err.Error() != "loading: disk on fire" {
		t.Errorf("got %v %q", CodeOf(err), err)
	}
	wrapped := errors.Join(errors.New("context"), NotFound("no model"))
	if CodeOf(wrapped) != CodeNotFound {
		t.Errorf("CodeOf through a wrap = %v", CodeOf(wrapped))
	}
	if CodeOf(errors.New("plain")) != CodeInternal {
		t.Error("plain errors are internal")
	}
}

func FuzzBytesCodec(f *testing.F) {
	f.Add([]byte{})
	f.Add(AppendBytesElement(nil, []byte("seed")))
	f.Add([]byte{255, 255, 255, 255, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		elems, err := SplitBytes("F", data)
		if err != nil {
			return
		}
		var again []byte
		for _, e := range elems {
			again = AppendBytesElement(again, e)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("re-encoding %x gave %x", data, again)
		}
		n, err := CountBytesElements("F", data)
		if err != nil || n != int64(len(elems)) {
			t.Fatalf("count %d, %v; split gave %d", n, err, len(elems))
		}
	})
}

func TestElementsAt(t *testing.T) {
	b := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	if Int64At(Int8, b, 1) != -1 || Int64At(Int16, b, 0) != -1 || Int64At(Int32, b, 1) != -1 || Int64At(Int64, b, 0) != -1 {
		t.Error("signed reads")
	}
	if Uint64At(Uint8, b, 0) != 255 || Uint64At(Uint16, b, 1) != 65535 || Uint64At(Uint32, b, 0) != math.MaxUint32 || Uint64At(Uint64, b, 0) != math.MaxUint64 {
		t.Error("unsigned reads")
	}
	f := binary.LittleEndian.AppendUint32(nil, math.Float32bits(1.5))
	f = binary.LittleEndian.AppendUint64(f, math.Float64bits(-2.25))
	if Float64At(FP32, f, 0) != 1.5 || Float64At(FP64, f[4:], 0) != -2.25 || Float64At(Int8, b, 0) != -1 || Float64At(Bool, []byte{1}, 0) != 1 {
		t.Error("float reads")
	}
}

func TestDimsMatch(t *testing.T) {
	tests := []struct {
		shape, dims []int64
		want        bool
	}{
		{[]int64{2, 3}, []int64{2, 3}, true},
		{[]int64{2, 3}, []int64{-1, 3}, true},
		{[]int64{2, 3}, []int64{2, 4}, false},
		{[]int64{2}, []int64{2, -1}, false},
		{[]int64{}, []int64{}, true},
	}
	for _, tc := range tests {
		if got := DimsMatch(tc.shape, tc.dims); got != tc.want {
			t.Errorf("DimsMatch(%v, %v) = %v", tc.shape, tc.dims, got)
		}
	}
}
