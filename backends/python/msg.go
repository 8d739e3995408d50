package python

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/jsonw"
)

// tensorDesc names a tensor's bytes in the sender's shared memory.
type tensorDesc struct {
	N  string  `json:"n"`
	DT string  `json:"dt"`
	SH []int64 `json:"sh"`
	S  int     `json:"s"`
	O  int64   `json:"o"`
	L  int64   `json:"l"`
}

// wireError is the error object of every message.
type wireError struct {
	Code string `json:"code"`
	Msg  string `json:"msg"`
}

// wireResp is a response: an element of done.resps, or the body of a resp.
type wireResp struct {
	Out   []tensorDesc    `json:"out"`
	P     json.RawMessage `json:"p"`
	Error *wireError      `json:"error"`
}

// inMsg is any frame the stub sends; T says which fields mean something.
type inMsg struct {
	T string `json:"t"`
	// ID is an integer for done, ready_r, pong and call, the request id
	// string for infer.
	ID json.RawMessage `json:"id"`
	R  int64           `json:"r"`
	C  int64           `json:"c"`

	// seg and drop.
	S int   `json:"s"`
	Z int64 `json:"z"`

	// resp, and done.resps.
	Has    bool            `json:"has"`
	Final  bool            `json:"final"`
	OutRaw json.RawMessage `json:"out"`
	Out    []tensorDesc    `json:"-"` // resp: the output tensors
	P      json.RawMessage `json:"p"`
	Error  *wireError      `json:"error"`
	Resps  []wireResp      `json:"resps"`

	// ready_r, inited.
	OK     bool            `json:"ok"`
	Config json.RawMessage `json:"config"`

	// infer.
	Model string          `json:"model"`
	Ver   string          `json:"ver"`
	CID   json.RawMessage `json:"cid"`
	Fl    uint32          `json:"fl"`
	To    uint64          `json:"to"`
	Names []string        `json:"-"` // infer: the requested outputs
	In    []tensorDesc    `json:"in"`
	Dec   bool            `json:"dec"`
	Par   bool            `json:"par"` // made by the running execute
	Tr    int64           `json:"tr"`  // the handle of the request whose trace() it was given; 0: none

	// call.
	Op string          `json:"op"`
	A  json.RawMessage `json:"a"`

	// log.
	Lvl  string `json:"lvl"`
	Msg  string `json:"msg"`
	File string `json:"file"`
	Line int    `json:"line"`

	// mop.
	M int64   `json:"m"`
	V float64 `json:"v"`

	Fr [][2]int64 `json:"fr"`
}

// stubTypes lists the frame types a stub may send.
var stubTypes = map[string]bool{
	"inited": true, "done": true, "resp": true, "ready_r": true, "pong": true,
	"fin_done": true, "infer": true, "icancel": true, "call": true, "log": true,
	"mop": true, "seg": true, "drop": true, "free": true,
}

// decodeMsg parses and checks one frame from the stub. Everything a frame
// says is untrusted: a bad frame is an error, never a panic.
func decodeMsg(body []byte) (*inMsg, error) {
	m := &inMsg{}
	if err := json.Unmarshal(body, m); err != nil {
		return nil, fmt.Errorf("bad frame from the stub: %w", err)
	}
	if raw := bytes.TrimSpace(m.OutRaw); len(raw) > 0 && string(raw) != "null" {
		// "out" lists names in an infer, tensors everywhere else.
		var err error
		if m.T == "infer" {
			err = json.Unmarshal(raw, &m.Names)
		} else {
			err = json.Unmarshal(raw, &m.Out)
		}
		if err != nil {
			return nil, fmt.Errorf("bad %s frame from the stub: out: %w", m.T, err)
		}
	}
	if !stubTypes[m.T] {
		return nil, fmt.Errorf("bad frame from the stub: unknown type %q", m.T)
	}
	for _, d := range m.Out {
		if err := checkDesc(d); err != nil {
			return nil, err
		}
	}
	for _, d := range m.In {
		if err := checkDesc(d); err != nil {
			return nil, err
		}
	}
	for _, r := range m.Resps {
		for _, d := range r.Out {
			if err := checkDesc(d); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// checkDesc checks what a descriptor says on its own; the bytes it names
// are checked against the segment when they are read (arena.view).
func checkDesc(d tensorDesc) error {
	dt, ok := inference.ParseDataType(d.DT)
	if !ok {
		return fmt.Errorf("tensor '%s' from the stub has unknown datatype %q", d.N, d.DT)
	}
	if d.L < 0 || d.O < 0 {
		return fmt.Errorf("tensor '%s' from the stub has a negative offset or length", d.N)
	}
	for _, s := range d.SH {
		if s < 0 {
			return fmt.Errorf("tensor '%s' from the stub has a negative dimension in shape %v", d.N, d.SH)
		}
	}
	if dt != inference.Bytes {
		want := inference.ByteSize(dt, d.SH)
		if want < 0 || want != d.L {
			return fmt.Errorf("tensor '%s' from the stub holds %d bytes; %s %v needs %d", d.N, d.L, d.DT, d.SH, want)
		}
	}
	return nil
}

// intID reads an integer id field.
func intID(raw json.RawMessage) (int64, bool) {
	v, err := strconv.ParseInt(string(bytes.TrimSpace(raw)), 10, 64)
	return v, err == nil
}

// parseParams reads a parameters object: integers stay integers.
func parseParams(raw json.RawMessage) (inference.Parameters, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("parameters: %w", err)
	}
	if len(m) == 0 {
		return nil, nil
	}
	p := make(inference.Parameters, len(m))
	for k, v := range m {
		switch v := v.(type) {
		case bool, string:
			p[k] = v
		case json.Number:
			if i, err := v.Int64(); err == nil {
				p[k] = i
			} else if u, err := strconv.ParseUint(v.String(), 10, 64); err == nil {
				p[k] = u
			} else if f, err := v.Float64(); err == nil {
				p[k] = f
			} else {
				return nil, fmt.Errorf("parameter '%s': %w", k, err)
			}
		default:
			return nil, fmt.Errorf("parameter '%s' must be a bool, a number or a string", k)
		}
	}
	return p, nil
}

// wireCodes maps the error codes of frames to Nereid's classes.
var wireCodes = map[string]inference.Code{
	"UNKNOWN":        inference.CodeUnknown,
	"INTERNAL":       inference.CodeInternal,
	"NOT_FOUND":      inference.CodeNotFound,
	"INVALID_ARG":    inference.CodeInvalidArg,
	"UNAVAILABLE":    inference.CodeUnavailable,
	"UNSUPPORTED":    inference.CodeUnsupported,
	"ALREADY_EXISTS": inference.CodeAlreadyExists,
	"CANCELLED":      inference.CodeCancelled,
}

func (e *wireError) err() error {
	code, ok := wireCodes[e.Code]
	if !ok {
		code = inference.CodeInternal
	}
	return &inference.Error{Code: code, Msg: e.Msg}
}

func codeName(c inference.Code) string {
	for k, v := range wireCodes {
		if v == c {
			return k
		}
	}
	return "INTERNAL"
}

// Frame writers. Every frame starts with 4 bytes for its length
// (conn.writeFrame fills them).

func newFrame(typ string) []byte {
	b := make([]byte, 4, 256)
	b = append(b, `{"t":`...)
	b = jsonw.AppendString(b, typ)
	return b
}

func appendInt(b []byte, key string, v int64) []byte {
	b = append(b, ',')
	b = jsonw.AppendString(b, key)
	b = append(b, ':')
	return strconv.AppendInt(b, v, 10)
}

func appendStr(b []byte, key, v string) []byte {
	b = append(b, ',')
	b = jsonw.AppendString(b, key)
	b = append(b, ':')
	return jsonw.AppendString(b, v)
}

func appendBool(b []byte, key string, v bool) []byte {
	b = append(b, ',')
	b = jsonw.AppendString(b, key)
	b = append(b, ':')
	return strconv.AppendBool(b, v)
}

func appendRaw(b []byte, key string, raw []byte) []byte {
	b = append(b, ',')
	b = jsonw.AppendString(b, key)
	b = append(b, ':')
	return append(b, raw...)
}

func appendDesc(b []byte, name string, dt inference.DataType, shape []int64, c chunk) []byte {
	b = append(b, `{"n":`...)
	b = jsonw.AppendString(b, name)
	b = append(b, `,"dt":`...)
	b = jsonw.AppendString(b, dt.String())
	b = append(b, `,"sh":[`...)
	for i, d := range shape {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, d, 10)
	}
	b = append(b, `],"s":`...)
	b = strconv.AppendInt(b, int64(c.seg), 10)
	b = append(b, `,"o":`...)
	b = strconv.AppendInt(b, c.off, 10)
	b = append(b, `,"l":`...)
	b = strconv.AppendInt(b, int64(len(c.mem)), 10)
	return append(b, '}')
}

func appendParams(b []byte, key string, p inference.Parameters) []byte {
	b = append(b, ',')
	b = jsonw.AppendString(b, key)
	b = append(b, ':')
	return jsonw.AppendParameters(b, p)
}

func appendFrees(b []byte, frees [][2]int64) []byte {
	if len(frees) == 0 {
		return b
	}
	b = append(b, `,"fr":[`...)
	for i, f := range frees {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '[')
		b = strconv.AppendInt(b, f[0], 10)
		b = append(b, ',')
		b = strconv.AppendInt(b, f[1], 10)
		b = append(b, ']')
	}
	return append(b, ']')
}

func appendError(b []byte, err error) []byte {
	if err == nil {
		return b
	}
	b = append(b, `,"error":{"code":`...)
	b = jsonw.AppendString(b, codeName(inference.CodeOf(err)))
	b = append(b, `,"msg":`...)
	b = jsonw.AppendString(b, err.Error())
	return append(b, '}')
}

func endFrame(b []byte) []byte { return append(b, '}') }
