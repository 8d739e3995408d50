// Package jsonw writes the JSON forms of Triton's protocol by hand, byte
// for byte as Triton's own writers do: strings escaped as rapidjson
// escapes them, doubles as rapidjson prints them, parameters with sorted
// keys, and model configurations as Triton's config endpoint shows them.
// The HTTP front end and the Python backend (which hands a model its
// configuration) share it.
package jsonw

import (
	"math"
	"sort"
	"strconv"

	"github.com/nereid-project/nereid/inference"
)

const hexDigits = "0123456789ABCDEF"

// AppendString appends s as a JSON string escaped the way Triton's
// JSON writer (rapidjson) escapes: quote, backslash and control characters;
// every other byte, including bytes that are not UTF-8, is copied as is.
func AppendString[T string | []byte](dst []byte, s T) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"':
			dst = append(dst, '\\', '"')
		case '\\':
			dst = append(dst, '\\', '\\')
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// AppendFloat appends f the way Triton's JSON writer prints a double:
// the shortest digits that round-trip, "1.0" rather than "1", exponent
// notation only outside [1e-6, 1e21). JSON has no NaN or infinity; where
// rapidjson would fail, this writes NaN, Infinity and -Infinity, which
// tritonclient's JSON parser (python-rapidjson) accepts.
func AppendFloat(dst []byte, f float64) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, "NaN"...)
	case math.IsInf(f, 1):
		return append(dst, "Infinity"...)
	case math.IsInf(f, -1):
		return append(dst, "-Infinity"...)
	}
	if math.Signbit(f) {
		dst = append(dst, '-')
		f = -f
	}
	if f == 0 {
		return append(dst, "0.0"...)
	}
	// Shortest digits d1.d2...dn and exponent E from strconv.
	var tmp [32]byte
	e := strconv.AppendFloat(tmp[:0], f, 'e', -1, 64)
	var digits [24]byte
	n := 0
	i := 0
	for ; i < len(e) && e[i] != 'e'; i++ {
		if e[i] != '.' {
			digits[n] = e[i]
			n++
		}
	}
	// e[i:] is "e+DD" or "e-DD".
	exp := 0
	for _, c := range e[i+2:] {
		exp = exp*10 + int(c-'0')
	}
	if e[i+1] == '-' {
		exp = -exp
	}
	return prettifyFloat(dst, digits[:n], exp-(n-1))
}

// prettifyFloat lays out digits*10^k as rapidjson's Prettify does.
func prettifyFloat(dst, digits []byte, k int) []byte {
	length := len(digits)
	kk := length + k // 10^(kk-1) <= value < 10^kk
	switch {
	case k >= 0 && kk <= 21:
		// 1234e7 -> 12340000000.0
		dst = append(dst, digits...)
		for j := 0; j < k; j++ {
			dst = append(dst, '0')
		}
		return append(dst, '.', '0')
	case kk > 0 && kk <= 21:
		// 1234e-2 -> 12.34
		dst = append(dst, digits[:kk]...)
		dst = append(dst, '.')
		return append(dst, digits[kk:]...)
	case kk > -6 && kk <= 0:
		// 1234e-6 -> 0.001234
		dst = append(dst, '0', '.')
		for j := kk; j < 0; j++ {
			dst = append(dst, '0')
		}
		return append(dst, digits...)
	case length == 1:
		// 1e30
		dst = append(dst, digits[0], 'e')
		return appendExponent(dst, kk-1)
	default:
		// 1234e30 -> 1.234e33
		dst = append(dst, digits[0], '.')
		dst = append(dst, digits[1:]...)
		dst = append(dst, 'e')
		return appendExponent(dst, kk-1)
	}
}

func appendExponent(dst []byte, k int) []byte {
	if k < 0 {
		dst = append(dst, '-')
		k = -k
	}
	return strconv.AppendInt(dst, int64(k), 10)
}

// AppendParameters writes a parameters object with its keys sorted.
func AppendParameters(dst []byte, p inference.Parameters) []byte {
	dst = append(dst, '{')
	for i, k := range SortedKeys(p) {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendString(dst, k)
		dst = append(dst, ':')
		dst = AppendParamValue(dst, p[k])
	}
	return append(dst, '}')
}

// SortedKeys returns the keys of p in order.
func SortedKeys(p inference.Parameters) []string {
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// AppendParamValue writes one parameter value.
func AppendParamValue(dst []byte, v any) []byte {
	switch v := v.(type) {
	case bool:
		return strconv.AppendBool(dst, v)
	case int64:
		return strconv.AppendInt(dst, v, 10)
	case uint64:
		return strconv.AppendUint(dst, v, 10)
	case int:
		return strconv.AppendInt(dst, int64(v), 10)
	case int32:
		return strconv.AppendInt(dst, int64(v), 10)
	case uint32:
		return strconv.AppendUint(dst, uint64(v), 10)
	case float64:
		return AppendFloat(dst, v)
	case float32:
		return AppendFloat(dst, float64(v))
	case string:
		return AppendString(dst, v)
	case []byte:
		return AppendString(dst, v)
	case nil:
		return append(dst, "null"...)
	default:
		return append(dst, "null"...)
	}
}
