package inference

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Error texts echo what the client sent (a model or tensor name, a shape).
// Echoed whole, a 100,000-character name or a 10,000-dimension shape makes a
// message too large for a gRPC trailer (clients then see the stream reset
// instead of the status) and floods logs. Errorf therefore bounds every
// argument it formats, and the whole message, here.

const (
	// MaxEchoBytes bounds one formatted argument of an error text.
	MaxEchoBytes = 256
	// MaxMessageBytes bounds a whole error text, whatever built it.
	MaxMessageBytes = 2048
)

// Truncate returns s cut to at most n bytes (on a UTF-8 boundary) followed
// by a marker saying how many bytes were left out; s itself when it fits.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…(" + strconv.Itoa(len(s)-cut) + " more bytes)"
}

// boundedArg formats its value with the verb it is given and truncates the
// result to MaxEchoBytes.
type boundedArg struct{ v any }

func (b boundedArg) Format(f fmt.State, verb rune) {
	s := fmt.Sprintf(fmt.FormatString(f, verb), b.v)
	_, _ = f.Write([]byte(Truncate(s, MaxEchoBytes)))
}

// boundArgs replaces the arguments of an error text that could be long
// with bounded ones. Errors are kept as they are, so that %w still wraps
// them (their texts are bounded with the whole message).
func boundArgs(args []any) []any {
	var out []any
	for i, a := range args {
		var r any
		switch v := a.(type) {
		case nil, error, bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, uintptr,
			float32, float64, complex64, complex128:
			continue
		case string:
			if len(v) <= MaxEchoBytes {
				continue
			}
			r = Truncate(v, MaxEchoBytes) // before quoting, so that %q keeps its quotes
		case []byte:
			if len(v) <= MaxEchoBytes {
				continue
			}
			r = Truncate(string(v), MaxEchoBytes)
		default:
			r = boundedArg{a}
		}
		if out == nil {
			out = append([]any(nil), args...)
		}
		out[i] = r
	}
	if out == nil {
		return args
	}
	return out
}
