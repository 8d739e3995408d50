package batch

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/jsonw"
	"github.com/nereid-project/nereid/server/v2wire"
)

// record is one line of a JSONL file or one row of a CSV file, read into
// the inputs of one request.
type record struct {
	line int   // 1-based line of the file where the record starts
	size int64 // bytes of the file it took (progress)
	err  error // why the record cannot run; only line and size are set then

	// What was read, until parse: a JSONL line, or a CSV row and its
	// file's layout.
	raw    []byte
	fields []string
	layout *csvLayout

	id      string             // a KServe v2 request record's "id"
	inputs  []inference.Tensor // sorted by name; shapes include the batch dimension when the model batches
	outputs []inference.RequestedOutput
	params  inference.Parameters
	batch   int64 // batch elements: the inputs' first dimension when the model batches, else 1
}

// parser reads records into requests of one model. The tensors it makes
// own their data: nothing aliases the line they were read from.
type parser struct {
	model *Model
	hdr   []byte // scratch: the KServe v2 request a record stands for
}

// parse reads what rec holds into its inputs, or its error.
func (p *parser) parse(rec *record) {
	if rec.err != nil {
		return
	}
	var r *record
	if rec.layout != nil {
		r = p.parseCSV(rec.layout, rec.fields)
	} else {
		r = p.parseJSON(rec.raw)
	}
	r.line, r.size = rec.line, rec.size
	*rec = *r
}

// namedValue is a JSON value given for one input.
type namedValue struct {
	in   *Input
	span []byte // one JSON value: a scalar or a (nested) list
}

// parseJSON reads one JSONL line: an object mapping input names to values
// (scalars or nested lists), a KServe v2 request object ({"inputs": [...]}),
// or, for a model with one input, its value alone (a list).
func (p *parser) parseJSON(line []byte) *record {
	b := v2wire.TrimSpace(line)
	switch {
	case len(b) > 0 && b[0] == '[':
		if len(p.model.Inputs) != 1 {
			return p.fail("a record that is a list needs a model with one input; model '%s' has %d: give an object of input names", p.model.Name, len(p.model.Inputs))
		}
		if err := oneValue(b); err != nil {
			return &record{err: err}
		}
		return p.fromValues([]namedValue{{in: &p.model.Inputs[0], span: b}})
	case len(b) > 0 && b[0] == '{':
	default:
		return p.fail("a record must be a JSON object of input names and values, a KServe v2 request, or a list for a model with one input")
	}
	var (
		vals []namedValue
		v2   bool
	)
	r := v2wire.NewReader(b)
	err := r.Object(func(key []byte) error {
		start, end, err := r.Span()
		if err != nil {
			return err
		}
		span := b[start:end]
		if string(key) == "inputs" && isObjectList(span) {
			v2 = true
		}
		vals = append(vals, namedValue{in: &Input{Name: string(key)}, span: span})
		return nil
	})
	if err == nil {
		err = r.End()
	}
	if err != nil {
		return &record{err: err}
	}
	if v2 {
		return p.fromRequest(b)
	}
	if len(vals) == 0 {
		return p.fail("the record gives no inputs")
	}
	for i := range vals {
		name := vals[i].in.Name
		in := p.model.input(name)
		if in == nil {
			return p.fail("unknown input '%s': model '%s' has inputs %s", name, p.model.Name, p.inputNames())
		}
		for _, prev := range vals[:i] {
			if prev.in.Name == name {
				return p.fail("input '%s' is given twice", name)
			}
		}
		vals[i].in = in
	}
	return p.fromValues(vals)
}

// isObjectList reports whether span is a JSON list whose first element
// is an object: the "inputs" of a KServe v2 request rather than the data
// of an input named "inputs".
func isObjectList(span []byte) bool {
	r := v2wire.NewReader(span)
	if r.Peek() != '[' {
		return false
	}
	r = v2wire.NewReader(span[1:])
	return r.Peek() == '{'
}

// oneValue checks that b is exactly one JSON value.
func oneValue(b []byte) error {
	r := v2wire.NewReader(b)
	if err := r.SkipValue(); err != nil {
		return err
	}
	return r.End()
}

func (p *parser) inputNames() string {
	names := make([]string, len(p.model.Inputs))
	for i, in := range p.model.Inputs {
		names[i] = "'" + in.Name + "'"
	}
	return strings.Join(names, ", ")
}

func (p *parser) fail(format string, args ...any) *record {
	return &record{err: inference.InvalidArg(format, args...)}
}

// fromRequest reads a KServe v2 request object with the server's own
// decoder: inputs with explicit datatypes and shapes, and optionally
// requested outputs, parameters and an id.
func (p *parser) fromRequest(b []byte) *record {
	c := new(v2wire.Call)
	if err := v2wire.DecodeJSON(c, b, nil); err != nil {
		return &record{err: err}
	}
	rec := &record{id: c.Req.ID, inputs: c.Req.Inputs, outputs: c.Req.Outputs, params: c.Req.Parameters, batch: 1}
	slices.SortFunc(rec.inputs, func(a, b inference.Tensor) int { return strings.Compare(a.Name, b.Name) })
	if p.model.MaxBatchSize > 0 && len(rec.inputs) > 0 {
		if len(rec.inputs[0].Shape) == 0 {
			return p.fail("input '%s' has no batch dimension: model '%s' batches, so its shape is [batch, ...]", rec.inputs[0].Name, p.model.Name)
		}
		rec.batch = rec.inputs[0].Shape[0]
	}
	return rec
}

// fromValues turns values given per input into the request they stand
// for, decoded by the server's own decoder: the shapes are the values'
// shapes, fitted to the model's dims (resolveShape), and the datatypes the
// model's. FP16 and BF16 values are read as FP32 and converted, since
// JSON has no half-precision form.
func (p *parser) fromValues(vals []namedValue) *record {
	slices.SortFunc(vals, func(a, b namedValue) int { return strings.Compare(a.in.Name, b.in.Name) })
	rec := &record{batch: 1}
	h := append(p.hdr[:0], `{"inputs":[`...)
	for i, v := range vals {
		shape, err := nestedShape(v.span)
		if err != nil {
			return p.fail("input '%s': %v", v.in.Name, err)
		}
		full, batch, err := p.resolveShape(v.in, shape)
		if err != nil {
			return &record{err: err}
		}
		if i == 0 {
			rec.batch = batch
		} else if batch != rec.batch {
			return p.fail("inputs '%s' and '%s' have different batch sizes, %d and %d", vals[0].in.Name, v.in.Name, rec.batch, batch)
		}
		if i > 0 {
			h = append(h, ',')
		}
		dt := v.in.DataType
		if isHalf(dt) {
			dt = inference.FP32
		}
		h = append(h, `{"name":`...)
		h = jsonw.AppendString(h, v.in.Name)
		h = append(h, `,"datatype":"`...)
		h = append(h, dt.String()...)
		h = append(h, `","shape":`...)
		h = v2wire.AppendInt64Array(h, full)
		h = append(h, `,"data":`...)
		if len(shape) == 0 {
			h = append(h, '[')
			h = append(h, v.span...)
			h = append(h, ']')
		} else {
			h = append(h, v.span...)
		}
		h = append(h, '}')
	}
	h = append(h, "]}"...)
	p.hdr = h
	c := new(v2wire.Call)
	if err := v2wire.DecodeJSON(c, h, nil); err != nil {
		return &record{err: err}
	}
	rec.inputs = c.Req.Inputs
	for i := range rec.inputs {
		if dt := vals[i].in.DataType; isHalf(dt) {
			rec.inputs[i].Data = fp32ToHalf(dt, rec.inputs[i].Data)
			rec.inputs[i].DataType = dt
		}
	}
	return rec
}

// nestedShape returns the shape of a JSON value: [] for a scalar, the
// length of each level for a nested list, which must be rectangular.
func nestedShape(span []byte) ([]int64, error) {
	r := v2wire.NewReader(span)
	if r.Peek() != '[' {
		return []int64{}, nil
	}
	var lens []int64
	leafDepth := -1
	var walk func(level int) error
	walk = func(level int) error {
		if r.Peek() != '[' {
			if leafDepth == -1 {
				leafDepth = level
			} else if leafDepth != level {
				return errRagged
			}
			return r.SkipValue()
		}
		var n int64
		if err := r.Array(func() error { n++; return walk(level + 1) }); err != nil {
			return err
		}
		for len(lens) <= level {
			lens = append(lens, -1)
		}
		switch lens[level] {
		case -1:
			lens[level] = n
		case n:
		default:
			return errRagged
		}
		return nil
	}
	if err := walk(0); err != nil {
		return nil, err
	}
	if leafDepth == -1 {
		// Only empty lists: the shape is as deep as they go.
		leafDepth = len(lens)
	}
	if len(lens) != leafDepth {
		return nil, errRagged
	}
	return lens, nil
}

var errRagged = inference.InvalidArg("the value is a ragged list: every list at one level must have the same length")

// resolveShape fits the shape of a value to the model's input: for a
// batching model a value of the input's rank is one batch element and a
// value of one more rank is that many; a value whose rank differs is
// taken as the dims when they are fixed and hold as many elements (a flat
// list of an image's pixels, a scalar for dims [1]). It returns the
// request's shape and the batch size.
func (p *parser) resolveShape(in *Input, shape []int64) ([]int64, int64, error) {
	dims := in.Dims
	if len(shape) == 0 && len(dims) == 1 {
		shape = []int64{1}
	}
	batching := p.model.MaxBatchSize > 0
	switch {
	case batching && len(shape) == len(dims)+1:
		return shape, shape[0], nil
	case len(shape) == len(dims):
		if batching {
			return append([]int64{1}, shape...), 1, nil
		}
		return shape, 1, nil
	case fixed(dims) && inference.ElementCount(shape) == inference.ElementCount(dims):
		if batching {
			return append([]int64{1}, dims...), 1, nil
		}
		return slices.Clone(dims), 1, nil
	}
	want := "[" + dimsText(dims) + "]"
	if batching {
		want = "[batch, " + dimsText(dims) + "] or " + want
	}
	return nil, 0, inference.InvalidArg("input '%s' has shape %v: model '%s' takes %s", in.Name, shape, p.model.Name, want)
}

func fixed(dims []int64) bool {
	for _, d := range dims {
		if d < 0 {
			return false
		}
	}
	return true
}

func dimsText(dims []int64) string {
	s := make([]string, len(dims))
	for i, d := range dims {
		s[i] = strconv.FormatInt(d, 10)
	}
	return strings.Join(s, ", ")
}

// csvLayout is how the columns of a CSV file map to a model's inputs:
// each column one input (the header names every column after an input),
// or the whole row one input (a model with one input, whatever the
// header says).
type csvLayout struct {
	header  []string
	columns []*Input // per column; nil in row mode
	row     *Input   // the input of row mode
}

func newCSVLayout(m *Model, header []string) (*csvLayout, error) {
	l := &csvLayout{header: header}
	for _, name := range header {
		in := m.input(strings.TrimSpace(name))
		if in == nil {
			l.columns = nil
			break
		}
		if slices.Contains(l.columns, in) {
			return nil, fmt.Errorf("the header names input '%s' twice", in.Name)
		}
		l.columns = append(l.columns, in)
	}
	if l.columns != nil {
		return l, nil
	}
	if len(m.Inputs) != 1 {
		p := parser{model: m}
		return nil, fmt.Errorf("the header row must name an input of model '%s' in every column (its inputs: %s), or the model must have one input, which each row then fills", m.Name, p.inputNames())
	}
	l.row = &m.Inputs[0]
	return l, nil
}

// parseCSV reads one CSV row. A cell of a BYTES input is one element,
// as it is; any other cell is a JSON value: a number or a boolean, or, in
// column mode, a (nested) list for an input of several elements.
func (p *parser) parseCSV(l *csvLayout, fields []string) *record {
	if l.row != nil {
		h := []byte{'['}
		for i, f := range fields {
			if i > 0 {
				h = append(h, ',')
			}
			var err error
			if h, err = appendCell(h, l.row, l.header[i], f, false); err != nil {
				return &record{err: err}
			}
		}
		h = append(h, ']')
		return p.fromValues([]namedValue{{in: l.row, span: h}})
	}
	vals := make([]namedValue, len(fields))
	for i, f := range fields {
		in := l.columns[i]
		span, err := appendCell(nil, in, l.header[i], f, true)
		if err != nil {
			return &record{err: err}
		}
		vals[i] = namedValue{in: in, span: span}
	}
	return p.fromValues(vals)
}

// appendCell appends a CSV cell as a JSON value.
func appendCell(dst []byte, in *Input, column, cell string, lists bool) ([]byte, error) {
	if in.DataType == inference.Bytes {
		return jsonw.AppendString(dst, cell), nil
	}
	v := strings.TrimSpace(cell)
	if v == "" {
		return dst, inference.InvalidArg("column '%s' is empty", column)
	}
	if err := oneValue([]byte(v)); err != nil || v[0] == '{' || (!lists && v[0] == '[') {
		what := "a number or a boolean"
		if lists {
			what += " or a JSON list"
		}
		return dst, inference.InvalidArg("column '%s': %q is not %s", column, cell, what)
	}
	return append(dst, v...), nil
}
