package jsonw

import (
	"math"
	"strconv"
	"testing"
)

// The expectations are what rapidjson's Writer::Double prints, which is
// what Triton sends for FP32 and FP64 outputs.
func TestAppendFloat(t *testing.T) {
	tests := []struct {
		in   float64
		want string
	}{
		{0, "0.0"},
		{math.Copysign(0, -1), "-0.0"},
		{1, "1.0"},
		{-2.5, "-2.5"},
		{0.1, "0.1"},
		{float64(float32(0.1)), "0.10000000149011612"},
		{12.34, "12.34"},
		{123456789012, "123456789012.0"},
		{1e20, "100000000000000000000.0"},
		{1e21, "1e21"},
		{1.5e300, "1.5e300"},
		{0.001234, "0.001234"},
		{1e-6, "0.000001"},
		{1e-7, "1e-7"},
		{1.5e-7, "1.5e-7"},
		{5e-324, "5e-324"},
		{math.MaxFloat64, "1.7976931348623157e308"},
		{float64(math.MaxFloat32), "3.4028234663852886e38"},
		{math.NaN(), "NaN"},
		{math.Inf(1), "Infinity"},
		{math.Inf(-1), "-Infinity"},
	}
	for _, tc := range tests {
		if got := string(AppendFloat(nil, tc.in)); got != tc.want {
			t.Errorf("AppendFloat(%v) = %s, want %s", tc.in, got, tc.want)
		}
	}
	// Whatever the layout, finite values must read back exactly.
	for _, f := range []float64{3.14159, 1e-300, 6.02214076e23, 123.456e-10, 9007199254740993} {
		s := string(AppendFloat(nil, f))
		back, err := strconv.ParseFloat(s, 64)
		if err != nil || back != f {
			t.Errorf("%v printed as %s reads back as %v (%v)", f, s, back, err)
		}
	}
}

func TestAppendJSONString(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", `"plain"`},
		{`q"b\`, `"q\"b\\"`},
		{"\b\f\n\r\t\x00\x1f", `"\b\f\n\r\t\u0000\u001F"`},
		{"é/<>", `"é/<>"`},
		{"\xff\xfe", "\"\xff\xfe\""},
	}
	for _, tc := range tests {
		if got := string(AppendString(nil, tc.in)); got != tc.want {
			t.Errorf("AppendString(%q) = %s, want %s", tc.in, got, tc.want)
		}
		if got := string(AppendString(nil, []byte(tc.in))); got != tc.want {
			t.Errorf("AppendString([]byte %q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// The expectations are what protobuf's C++ JSON printer writes for double
// and float fields of a model configuration.
func TestAppendProtoFloat(t *testing.T) {
	tests := []struct {
		in   float64
		bits int
		want string
	}{
		{0, 64, "0"},
		{1, 64, "1"},
		{0.5, 64, "0.5"},
		{2.5e10, 64, "25000000000"},
		{1e15, 64, "1e+15"},
		{123456789012345, 64, "123456789012345"},
		{1e-5, 64, "1e-05"},
		{0.0001, 64, "0.0001"},
		{0.1, 64, "0.1"},
		{1e300, 64, "1e+300"},
		{-1.5e-7, 64, "-1.5e-07"},
		{float64(float32(0.1)), 32, "0.1"},
		{1e6, 32, "1e+06"},
		{123456, 32, "123456"},
		{float64(float32(16777217)), 32, "16777216"},
		{math.NaN(), 64, `"NaN"`},
		{math.Inf(-1), 32, `"-Infinity"`},
	}
	for _, tc := range tests {
		if got := string(AppendProtoFloat(nil, tc.in, tc.bits)); got != tc.want {
			t.Errorf("AppendProtoFloat(%v, %d) = %s, want %s", tc.in, tc.bits, got, tc.want)
		}
	}
}
