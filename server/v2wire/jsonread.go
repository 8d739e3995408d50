package v2wire

import (
	"bytes"
	"math"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/nereid-project/nereid/inference"
)

// maxJSONDepth bounds the nesting of arrays and objects in a request body:
// deep enough for the data of any tensor a model takes, shallow enough that
// the recursive reader cannot exhaust the stack.
const maxJSONDepth = 64

// Reader is a small, allocation-free JSON reader over a request body.
// Both front ends read every JSON body with it (inference, generate, model
// repository, shared-memory and SageMaker requests).
// Strings without escapes are returned as sub-slices of the buffer. Like
// the parser Triton uses it accepts any bytes >= 0x20 inside strings; unlike
// it, it caps the nesting depth.
type Reader struct {
	buf   []byte
	pos   int
	depth int
}

// NewReader returns a reader positioned at the start of buf.
func NewReader(buf []byte) Reader { return Reader{buf: buf} }

func (r *Reader) syntaxErr(msg string) error {
	return inference.InvalidArg("failed to parse the request JSON buffer: %s at %d", msg, r.pos)
}

func (r *Reader) ws() {
	for r.pos < len(r.buf) {
		switch r.buf[r.pos] {
		case ' ', '\t', '\n', '\r':
			r.pos++
		default:
			return
		}
	}
}

// Peek skips white space and returns the next byte, or 0 at the end.
func (r *Reader) Peek() byte {
	r.ws()
	if r.pos >= len(r.buf) {
		return 0
	}
	return r.buf[r.pos]
}

// End checks that nothing but white space follows the document.
func (r *Reader) End() error {
	if r.Peek() != 0 {
		return r.syntaxErr("the document root must not be followed by other values")
	}
	return nil
}

func (r *Reader) enter() error {
	r.depth++
	if r.depth > maxJSONDepth {
		return r.syntaxErr("JSON nesting too deep (more than 64 levels)")
	}
	return nil
}

// Object reads an object, calling fn for each member with the reader
// positioned at the member's value, which fn must consume.
func (r *Reader) Object(fn func(key []byte) error) error {
	switch r.Peek() {
	case '{':
	case 0:
		return r.syntaxErr("the document is empty or ends early")
	default:
		return r.syntaxErr("expected an object")
	}
	r.pos++
	if err := r.enter(); err != nil {
		return err
	}
	if r.Peek() == '}' {
		r.pos++
		r.depth--
		return nil
	}
	for {
		if r.Peek() != '"' {
			return r.syntaxErr("missing a name for object member")
		}
		key, err := r.ReadString()
		if err != nil {
			return err
		}
		if r.Peek() != ':' {
			return r.syntaxErr("missing a colon after a name of object member")
		}
		r.pos++
		r.ws()
		if err := fn(key); err != nil {
			return err
		}
		switch r.Peek() {
		case ',':
			r.pos++
		case '}':
			r.pos++
			r.depth--
			return nil
		default:
			return r.syntaxErr("missing a comma or '}' after an object member")
		}
	}
}

// Array reads an array, calling fn for each element with the reader
// positioned at it; fn must consume it.
func (r *Reader) Array(fn func() error) error {
	if r.Peek() != '[' {
		return r.syntaxErr("expected an array")
	}
	r.pos++
	if err := r.enter(); err != nil {
		return err
	}
	if r.Peek() == ']' {
		r.pos++
		r.depth--
		return nil
	}
	for {
		r.ws()
		if err := fn(); err != nil {
			return err
		}
		switch r.Peek() {
		case ',':
			r.pos++
		case ']':
			r.pos++
			r.depth--
			return nil
		default:
			return r.syntaxErr("missing a comma or ']' after an array element")
		}
	}
}

// SkipValue consumes one value of any type, checking its syntax.
func (r *Reader) SkipValue() error {
	switch c := r.Peek(); {
	case c == '{':
		return r.Object(func([]byte) error { return r.SkipValue() })
	case c == '[':
		return r.Array(r.SkipValue)
	case c == '"':
		_, err := r.ReadString()
		return err
	case c == 't' || c == 'f':
		_, err := r.ReadBool()
		return err
	case c == 'n':
		return r.readNull()
	case c == '-' || (c >= '0' && c <= '9') || c == 'N' || c == 'I':
		if _, ok := r.readNaNInf(); ok {
			return nil
		}
		_, _, err := r.ReadNumber()
		return err
	case c == 0:
		return r.syntaxErr("unexpected end of the document")
	default:
		return r.syntaxErr("invalid value")
	}
}

// Span consumes one value and returns its [start, end) offsets.
func (r *Reader) Span() (int, int, error) {
	r.ws()
	start := r.pos
	if err := r.SkipValue(); err != nil {
		return 0, 0, err
	}
	return start, r.pos, nil
}

func (r *Reader) literal(lit string) bool {
	if len(r.buf)-r.pos >= len(lit) && string(r.buf[r.pos:r.pos+len(lit)]) == lit {
		r.pos += len(lit)
		return true
	}
	return false
}

// ReadBool reads true or false.
func (r *Reader) ReadBool() (bool, error) {
	switch r.Peek() {
	case 't':
		if r.literal("true") {
			return true, nil
		}
	case 'f':
		if r.literal("false") {
			return false, nil
		}
	}
	return false, r.syntaxErr("expected a boolean")
}

// ReadBoolField reads the boolean value of the named field: a syntax error
// as such, any other well-formed value as "Unable to parse '<name>'".
func (r *Reader) ReadBoolField(name string) (bool, error) {
	if c := r.Peek(); c == 't' || c == 'f' {
		return r.ReadBool()
	}
	if err := r.SkipValue(); err != nil {
		return false, err
	}
	return false, inference.InvalidArg("Unable to parse '%s': expected a boolean", name)
}

func (r *Reader) readNull() error {
	if r.Peek() == 'n' && r.literal("null") {
		return nil
	}
	return r.syntaxErr("invalid value")
}

// readNaNInf reads NaN, Inf or Infinity, optionally after a minus sign: the
// literals Triton's JSON parser accepts for numbers (rapidjson with
// kParseNanAndInfFlag), which perf_analyzer's random FP32 data produces.
// When the next value is not one of them it returns false and consumes
// nothing.
func (r *Reader) readNaNInf() (float64, bool) {
	r.ws()
	b := r.buf[r.pos:]
	n := 0
	if len(b) > 0 && b[0] == '-' {
		n = 1
	}
	var f float64
	switch rest := b[n:]; {
	case bytes.HasPrefix(rest, []byte("NaN")):
		f, n = math.NaN(), n+3
	case bytes.HasPrefix(rest, []byte("Infinity")):
		f, n = math.Inf(1), n+8
	case bytes.HasPrefix(rest, []byte("Inf")):
		f, n = math.Inf(1), n+3
	default:
		return 0, false
	}
	if b[0] == '-' {
		f = -f
	}
	r.pos += n
	return f, true
}

// ReadNumber reads a number and returns its text and whether it is
// integral (no fraction or exponent).
func (r *Reader) ReadNumber() (tok []byte, isInt bool, err error) {
	r.ws()
	b := r.buf
	start, i := r.pos, r.pos
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		r.pos = i
		return nil, false, r.syntaxErr("invalid value")
	}
	isInt = true
	if i < len(b) && b[i] == '.' {
		isInt = false
		i++
		d := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == d {
			r.pos = i
			return nil, false, r.syntaxErr("missing fraction part in number")
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		isInt = false
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		d := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == d {
			r.pos = i
			return nil, false, r.syntaxErr("missing exponent in number")
		}
	}
	r.pos = i
	return b[start:i], isInt, nil
}

// ReadString reads a string. Without escapes the result aliases the
// buffer; with them it is a new slice.
func (r *Reader) ReadString() ([]byte, error) {
	if r.Peek() != '"' {
		return nil, r.syntaxErr("expected a string")
	}
	b := r.buf
	start := r.pos + 1
	for i := start; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			r.pos = i + 1
			return b[start:i], nil
		case c == '\\':
			return r.readEscaped(start, i)
		case c < 0x20:
			r.pos = i
			return nil, r.syntaxErr("invalid encoding in string")
		}
	}
	r.pos = len(b)
	return nil, r.syntaxErr("missing a closing quotation mark in string")
}

// readEscaped finishes a string that has escapes; b[start:i] is plain and
// b[i] is the first backslash.
func (r *Reader) readEscaped(start, i int) ([]byte, error) {
	b := r.buf
	out := make([]byte, 0, i-start+16)
	out = append(out, b[start:i]...)
	for i < len(b) {
		c := b[i]
		switch {
		case c == '"':
			r.pos = i + 1
			return out, nil
		case c < 0x20:
			r.pos = i
			return nil, r.syntaxErr("invalid encoding in string")
		case c != '\\':
			out = append(out, c)
			i++
			continue
		}
		if i+1 >= len(b) {
			break
		}
		switch e := b[i+1]; e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			cp, ok := hex4(b, i+2)
			if !ok {
				r.pos = i
				return nil, r.syntaxErr("incorrect hex digit after \\u escape in string")
			}
			i += 6
			if utf16.IsSurrogate(rune(cp)) {
				lo, ok := hex4(b, i+2)
				if cp >= 0xDC00 || i+1 >= len(b) || b[i] != '\\' || b[i+1] != 'u' || !ok || lo < 0xDC00 || lo > 0xDFFF {
					r.pos = i
					return nil, r.syntaxErr("the surrogate pair in string is invalid")
				}
				cp = uint32(utf16.DecodeRune(rune(cp), rune(lo)))
				i += 6
			}
			out = utf8.AppendRune(out, rune(cp))
			continue
		default:
			r.pos = i
			return nil, r.syntaxErr("invalid escape character in string")
		}
		i += 2
	}
	r.pos = len(b)
	return nil, r.syntaxErr("missing a closing quotation mark in string")
}

func hex4(b []byte, i int) (uint32, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var v uint32
	for _, c := range b[i : i+4] {
		v <<= 4
		switch {
		case c >= '0' && c <= '9':
			v |= uint32(c - '0')
		case c >= 'a' && c <= 'f':
			v |= uint32(c-'a') + 10
		case c >= 'A' && c <= 'F':
			v |= uint32(c-'A') + 10
		default:
			return 0, false
		}
	}
	return v, true
}

// parseUintTok parses the text of an integral, non-negative JSON number.
func parseUintTok(tok []byte) (uint64, bool) {
	if len(tok) == 0 || tok[0] == '-' {
		return 0, false
	}
	var v uint64
	for _, c := range tok {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if v > (math.MaxUint64-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	return v, true
}

// ParseInt parses the text of an integral JSON number into an int64.
func ParseInt(tok []byte) (int64, bool) {
	neg := len(tok) > 0 && tok[0] == '-'
	if neg {
		tok = tok[1:]
	}
	u, ok := parseUintTok(tok)
	if !ok {
		return 0, false
	}
	if neg {
		if u > 1<<63 {
			return 0, false
		}
		return -int64(u), true //nolint:gosec // u <= 1<<63 checked above
	}
	if u > math.MaxInt64 {
		return 0, false
	}
	return int64(u), true
}

// TrimSpace drops the JSON white space at the start of b: an empty result
// means the body has no document.
func TrimSpace(b []byte) []byte {
	for len(b) > 0 {
		switch b[0] {
		case ' ', '\t', '\n', '\r':
			b = b[1:]
			continue
		}
		break
	}
	return b
}
