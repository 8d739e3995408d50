package main

import (
	"encoding/binary"
	"errors"
	"math"
	"strconv"
	"unsafe"
)

// The JSON of an infer request, read without allocating: strings are
// sub-slices of the body (escapes are kept as they are, which is all the
// ceiling needs: names are compared, the id is echoed back verbatim).

var errSyntax = errors.New("failed to parse the request JSON buffer")

const maxDepth = 32

// scanner reads one JSON document. On a syntax error it sets bad and every
// later read returns zero values, so callers check bad once at the end.
type scanner struct {
	b   []byte
	i   int
	bad bool
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) peek() byte {
	s.ws()
	if s.bad || s.i >= len(s.b) {
		return 0
	}
	return s.b[s.i]
}

func (s *scanner) expect(c byte) {
	if s.peek() != c {
		s.bad = true
		return
	}
	s.i++
}

// more is called before each member of an object or element of an array
// whose opening bracket was read: it consumes the separating comma, or the
// closing bracket and then reports false. n counts the members so far.
func (s *scanner) more(end byte, n *int) bool {
	c := s.peek()
	switch {
	case s.bad:
		return false
	case c == end:
		s.i++
		return false
	case *n > 0:
		if c != ',' {
			s.bad = true
			return false
		}
		s.i++
	}
	*n++
	return true
}

// key reads an object member's name and its colon.
func (s *scanner) key() []byte {
	k := s.str()
	s.expect(':')
	return k
}

// str reads a string and returns its raw content.
func (s *scanner) str() []byte {
	s.expect('"')
	if s.bad {
		return nil
	}
	start := s.i
	for s.i < len(s.b) {
		switch c := s.b[s.i]; {
		case c == '"':
			s.i++
			return s.b[start : s.i-1]
		case c == '\\':
			if s.i+1 >= len(s.b) {
				s.bad = true
				return nil
			}
			s.i += 2
		case c < 0x20:
			s.bad = true
			return nil
		default:
			s.i++
		}
	}
	s.bad = true
	return nil
}

// number reads a number token (validated when it is converted, so that a
// bare word is an error where a number is expected).
func (s *scanner) number() []byte {
	if s.bad {
		return nil
	}
	s.ws()
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		// Letters too: perf_analyzer writes NaN and Infinity as rapidjson
		// does, and Triton reads them.
		if (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || (c|0x20 >= 'a' && c|0x20 <= 'z') {
			s.i++
			continue
		}
		break
	}
	if s.i == start {
		s.bad = true
	}
	return s.b[start:s.i]
}

func (s *scanner) int64() int64 {
	tok := s.number()
	if s.bad {
		return 0
	}
	v, err := strconv.ParseInt(unsafeString(tok), 10, 64)
	if err != nil {
		s.bad = true
	}
	return v
}

func (s *scanner) boolean() bool {
	if s.bad {
		return false
	}
	s.ws()
	switch {
	case hasPrefix(s.b[s.i:], "true"):
		s.i += 4
		return true
	case hasPrefix(s.b[s.i:], "false"):
		s.i += 5
		return false
	}
	s.bad = true
	return false
}

// skip reads any value.
func (s *scanner) skip(depth int) {
	if depth > maxDepth {
		s.bad = true
		return
	}
	switch s.peek() {
	case '"':
		s.str()
	case '{':
		s.i++
		for n := 0; s.more('}', &n); {
			s.key()
			s.skip(depth + 1)
		}
	case '[':
		s.i++
		for n := 0; s.more(']', &n); {
			s.skip(depth + 1)
		}
	case 't', 'f':
		s.boolean()
	case 'n':
		if !hasPrefix(s.b[s.i:], "null") {
			s.bad = true
			return
		}
		s.i += 4
	default:
		s.number()
	}
}

// appendData reads a tensor's "data" value, a possibly nested array of
// numbers, and appends its elements little-endian in the given data type.
func (s *scanner) appendData(dst []byte, datatype string, depth int) []byte {
	if depth > maxDepth {
		s.bad = true
		return dst
	}
	if s.peek() != '[' {
		tok := s.number()
		if s.bad {
			return dst
		}
		switch datatype {
		case "INT32":
			v, err := strconv.ParseInt(unsafeString(tok), 10, 32)
			if err != nil {
				s.bad = true
			}
			return binary.LittleEndian.AppendUint32(dst, uint32(v))
		case "FP32":
			v, err := strconv.ParseFloat(unsafeString(tok), 32)
			if err != nil {
				s.bad = true
			}
			return binary.LittleEndian.AppendUint32(dst, math.Float32bits(float32(v)))
		}
		s.bad = true
		return dst
	}
	s.i++
	for n := 0; s.more(']', &n); {
		dst = s.appendData(dst, datatype, depth+1)
	}
	return dst
}

func hasPrefix(b []byte, p string) bool { return len(b) >= len(p) && string(b[:len(p)]) == p }

func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// jsonInput is one entry of a request's "inputs".
type jsonInput struct {
	name, datatype []byte
	shape          []int64
	binarySize     int    // parameters.binary_data_size; -1 when absent
	data           []byte // the raw "data" value; nil when absent
}

// jsonOutput is one entry of a request's "outputs".
type jsonOutput struct {
	name   []byte
	binary int8 // parameters.binary_data: -1 absent, 0 false, 1 true
}

// jsonRequest is an infer request's JSON object. Its slices are reused from
// one request to the next.
type jsonRequest struct {
	id           []byte
	hasID        bool
	inputs       []jsonInput
	outputs      []jsonOutput
	binaryOutput bool // parameters.binary_data_output
}

func (r *jsonRequest) reset() {
	for i := range r.inputs {
		r.inputs[i].shape = r.inputs[i].shape[:0]
	}
	r.id, r.hasID, r.inputs, r.outputs, r.binaryOutput = nil, false, r.inputs[:0], r.outputs[:0], false
}

// parse reads the JSON object of an infer request.
func (r *jsonRequest) parse(b []byte) error {
	r.reset()
	s := scanner{b: b}
	s.expect('{')
	for n := 0; s.more('}', &n); {
		switch string(s.key()) {
		case "id":
			r.id, r.hasID = s.str(), true
		case "inputs":
			s.expect('[')
			for m := 0; s.more(']', &m); {
				r.parseInput(&s)
			}
		case "outputs":
			s.expect('[')
			for m := 0; s.more(']', &m); {
				r.parseOutput(&s)
			}
		case "parameters":
			s.expect('{')
			for m := 0; s.more('}', &m); {
				if string(s.key()) == "binary_data_output" {
					r.binaryOutput = s.boolean()
				} else {
					s.skip(1)
				}
			}
		default:
			s.skip(0)
		}
	}
	if s.ws(); s.i != len(s.b) {
		s.bad = true
	}
	if s.bad {
		return errSyntax
	}
	return nil
}

func (r *jsonRequest) parseInput(s *scanner) {
	if len(r.inputs) < cap(r.inputs) {
		r.inputs = r.inputs[:len(r.inputs)+1]
	} else {
		r.inputs = append(r.inputs, jsonInput{})
	}
	in := &r.inputs[len(r.inputs)-1]
	in.name, in.datatype, in.shape, in.binarySize, in.data = nil, nil, in.shape[:0], -1, nil
	s.expect('{')
	for n := 0; s.more('}', &n); {
		switch string(s.key()) {
		case "name":
			in.name = s.str()
		case "datatype":
			in.datatype = s.str()
		case "shape":
			s.expect('[')
			for m := 0; s.more(']', &m); {
				in.shape = append(in.shape, s.int64())
			}
		case "parameters":
			s.expect('{')
			for m := 0; s.more('}', &m); {
				if string(s.key()) == "binary_data_size" {
					in.binarySize = int(s.int64())
				} else {
					s.skip(2)
				}
			}
		case "data":
			s.ws()
			start := s.i
			s.skip(1)
			in.data = s.b[start:s.i]
		default:
			s.skip(1)
		}
	}
}

func (r *jsonRequest) parseOutput(s *scanner) {
	out := jsonOutput{binary: -1}
	s.expect('{')
	for n := 0; s.more('}', &n); {
		switch string(s.key()) {
		case "name":
			out.name = s.str()
		case "parameters":
			s.expect('{')
			for m := 0; s.more('}', &m); {
				if string(s.key()) == "binary_data" {
					if s.boolean() {
						out.binary = 1
					} else {
						out.binary = 0
					}
				} else {
					s.skip(2)
				}
			}
		default:
			s.skip(1)
		}
	}
	r.outputs = append(r.outputs, out)
}
