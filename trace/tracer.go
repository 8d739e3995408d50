package trace

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/inference"
)

// Options configures a Tracer.
type Options struct {
	// Settings are the global settings from --trace-config.
	Settings Settings
	Logger   zerolog.Logger
}

// Tracer decides which requests are traced and writes their traces. Its
// methods are safe for concurrent use. Close flushes what it holds.
type Tracer struct {
	log      zerolog.Logger
	defaults Settings
	nextID   atomic.Uint64
	// active is set while any scope can take a trace: the fast path of
	// Sample when tracing is off.
	active atomic.Bool

	mu     sync.Mutex // guards the fields below
	global *scope
	models map[string]*scope
	files  map[string]*traceFile
	otel   *otelExporter // nil unless the mode is opentelemetry
	closed bool

	tensorsUnsupported sync.Once // logs that opentelemetry mode has no tensors
}

// specified marks the fields a scope sets itself rather than inherits.
type specified struct{ level, rate, count, logFrequency bool }

func (s specified) any() bool { return s.level || s.rate || s.count || s.logFrequency }

// scope is the settings and the sampling state of the global settings or
// one model's override. Updates replace a scope; the old one flushes.
type scope struct {
	settings Settings
	own      specified
	file     *traceFile // nil in opentelemetry mode

	mu        sync.Mutex // guards the sampling state below
	sampled   uint64     // requests seen
	count     int32      // traces left; -1 unlimited
	created   uint64
	collected uint64
	inStream  uint32
	stream    bytes.Buffer // finished traces not written yet, comma-separated
}

// New returns a Tracer with the global settings of opts.
func New(opts Options) (*Tracer, error) {
	t := &Tracer{log: opts.Logger, defaults: opts.Settings, models: map[string]*scope{}, files: map[string]*traceFile{}}
	if opts.Settings.Mode == ModeOpenTelemetry {
		exp, err := newOTelExporter(opts.Settings.Options)
		if err != nil {
			return nil, err
		}
		t.otel = exp
	}
	t.global = t.newScopeLocked(opts.Settings, specified{})
	t.refreshActiveLocked()
	return t, nil
}

func (t *Tracer) newScopeLocked(s Settings, own specified) *scope {
	sc := &scope{settings: s, own: own, count: s.Count}
	if s.Mode == ModeTriton && s.File != "" {
		f := t.files[s.File]
		if f == nil {
			f = &traceFile{path: s.File}
			t.files[s.File] = f
		}
		sc.file = f
	}
	return sc
}

func (t *Tracer) refreshActiveLocked() {
	active := t.global.settings.invalidReason() == ""
	for _, m := range t.models {
		active = active || m.settings.invalidReason() == ""
	}
	t.active.Store(active && !t.closed)
}

// Settings returns the effective settings of a model ("" for the global
// ones), with the count of traces left.
func (t *Tracer) Settings(model string) Settings {
	t.mu.Lock()
	sc := t.scopeLocked(model)
	t.mu.Unlock()
	s := sc.settings
	sc.mu.Lock()
	s.Count = sc.count
	sc.mu.Unlock()
	return s
}

func (t *Tracer) scopeLocked(model string) *scope {
	if sc := t.models[model]; model != "" && sc != nil {
		return sc
	}
	return t.global
}

// Update applies an update to a model's settings ("" for the global ones)
// and returns the new effective settings. Settings that could not trace
// are refused unless they turn tracing off, as in Triton.
func (t *Tracer) Update(model string, u Update) (Settings, error) {
	t.mu.Lock()
	var retired []*scope
	defer func() {
		t.mu.Unlock()
		for _, sc := range retired {
			t.flushScope(sc)
		}
	}()
	if model == "" {
		base := t.defaults
		own, s := merge(t.global, base, u)
		if err := valid(s); err != nil {
			return Settings{}, err
		}
		retired = append(retired, t.global)
		t.global = t.newScopeLocked(s, own)
		// Models that inherit some settings follow the new global ones.
		for name, m := range t.models {
			_, ms := merge(m, t.global.settings, Update{})
			retired = append(retired, m)
			t.models[name] = t.newScopeLocked(ms, m.own)
		}
	} else {
		cur := t.models[model]
		if cur == nil {
			cur = &scope{}
		}
		fallback := t.global.settings
		t.global.mu.Lock()
		fallback.Count = t.global.count
		t.global.mu.Unlock()
		own, s := merge(cur, fallback, u)
		if own.any() {
			if err := valid(s); err != nil {
				return Settings{}, err
			}
		}
		if t.models[model] != nil {
			retired = append(retired, t.models[model])
		}
		if own.any() {
			t.models[model] = t.newScopeLocked(s, own)
		} else {
			delete(t.models, model)
		}
	}
	t.refreshActiveLocked()
	sc := t.scopeLocked(model)
	s := sc.settings
	s.Count = sc.count
	return s, nil
}

// merge computes a scope's new settings: its own fields, changed by u,
// over the fallback settings. The count a scope keeps is what is left of it.
func merge(cur *scope, fallback Settings, u Update) (specified, Settings) {
	own := cur.own
	s := fallback
	cur.mu.Lock()
	left := cur.count
	cur.mu.Unlock()
	apply := func(f field, spec *bool, set func(), keep func()) {
		switch {
		case f.clear:
			*spec = false
		case f.set:
			*spec = true
			set()
		case *spec:
			keep()
		}
	}
	apply(u.Level, &own.level, func() { s.Level = u.Level.level }, func() { s.Level = cur.settings.Level })
	apply(u.Rate, &own.rate, func() { s.Rate = uint32(u.Rate.value) }, func() { s.Rate = cur.settings.Rate })
	apply(u.Count, &own.count, func() { s.Count = int32(u.Count.value) }, func() { s.Count = left })
	apply(u.LogFrequency, &own.logFrequency, func() { s.LogFrequency = uint32(u.LogFrequency.value) }, func() { s.LogFrequency = cur.settings.LogFrequency })
	return own, s
}

func valid(s Settings) error {
	if r := s.invalidReason(); r != "" && s.Level != 0 {
		return inference.InvalidArg("Attempting to set invalid trace setting :%s", r)
	}
	return nil
}

// Sample returns a trace for a request to model when the model's settings
// take this request, else nil. Every method of a nil *Trace is a no-op.
func (t *Tracer) Sample(model string) *Trace {
	if t == nil || !t.active.Load() {
		return nil
	}
	t.mu.Lock()
	sc := t.scopeLocked(model)
	t.mu.Unlock()
	if sc.settings.invalidReason() != "" {
		return nil
	}
	sc.mu.Lock()
	if sc.count == 0 {
		sc.mu.Unlock()
		return nil
	}
	sc.sampled++
	take := sc.sampled%uint64(sc.settings.Rate) == 0
	if take {
		if sc.count > 0 {
			sc.count--
		}
		sc.created++
	}
	sc.mu.Unlock()
	if !take {
		return nil
	}
	return &Trace{tracer: t, scope: sc, id: t.nextID.Add(1), model: model}
}

// Close writes the traces still held and closes the trace files and the
// exporter. Traces finished after Close are dropped.
func (t *Tracer) Close(ctx context.Context) error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.active.Store(false)
	scopes := []*scope{t.global}
	for _, m := range t.models {
		scopes = append(scopes, m)
	}
	files := t.files
	exp := t.otel
	t.mu.Unlock()
	for _, sc := range scopes {
		t.flushScope(sc)
	}
	var errs []error
	for _, f := range files {
		errs = append(errs, f.close())
	}
	if exp != nil {
		errs = append(errs, exp.shutdown(ctx))
	}
	return errors.Join(errs...)
}

// flushScope writes what a retired scope still holds: to an indexed file
// when it writes by log frequency, else to the trace file itself.
func (t *Tracer) flushScope(sc *scope) {
	sc.mu.Lock()
	data := append([]byte(nil), sc.stream.Bytes()...)
	sc.stream.Reset()
	n := sc.inStream
	sc.inStream = 0
	sc.mu.Unlock()
	if n == 0 || sc.file == nil {
		return
	}
	var err error
	if sc.settings.LogFrequency != 0 {
		err = sc.file.writeIndexed(data)
	} else {
		err = sc.file.append(data)
	}
	if err != nil {
		t.log.Error().Err(err).Str("file", sc.file.path).Msg("failed writing traces")
	}
}

// record adds one finished trace (its JSON records) to its scope's stream
// and writes the stream to an indexed file when the scope's trace count is
// used up or log_frequency traces have gathered. A trace without records
// (TENSORS alone, for a request refused before its tensors were recorded)
// is counted as collected but adds nothing, which keeps the files valid
// JSON.
func (sc *scope) record(t *Tracer, traceJSON []byte) {
	sc.mu.Lock()
	if len(traceJSON) > 0 {
		if sc.inStream > 0 {
			sc.stream.WriteByte(',')
		}
		sc.stream.Write(traceJSON)
		sc.inStream++
	}
	sc.collected++
	var data []byte
	if sc.inStream > 0 && ((sc.count == 0 && sc.collected == sc.created) || (sc.settings.LogFrequency != 0 && sc.inStream >= sc.settings.LogFrequency)) {
		data = append([]byte(nil), sc.stream.Bytes()...)
		sc.stream.Reset()
		sc.inStream = 0
	}
	sc.mu.Unlock()
	if data != nil && sc.file != nil {
		if err := sc.file.writeIndexed(data); err != nil {
			t.log.Error().Err(err).Str("file", sc.file.path).Msg("failed writing traces")
		}
	}
}

// traceFile is a trace_file path: the file itself, which collects the
// traces written at shutdown as one JSON array, and its indexed siblings
// <path>.<n>, each a complete JSON array.
type traceFile struct {
	path  string
	index atomic.Uint64

	mu sync.Mutex // guards f
	f  *os.File
}

func (f *traceFile) writeIndexed(data []byte) error {
	name := f.path + "." + strconv.FormatUint(f.index.Add(1)-1, 10)
	buf := make([]byte, 0, len(data)+2)
	buf = append(append(append(buf, '['), data...), ']')
	return os.WriteFile(name, buf, 0o644)
}

func (f *traceFile) append(data []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	sep := byte(',')
	if f.f == nil {
		file, err := os.Create(f.path)
		if err != nil {
			return err
		}
		f.f = file
		sep = '['
	}
	if _, err := f.f.Write([]byte{sep}); err != nil {
		return err
	}
	_, err := f.f.Write(data)
	return err
}

func (f *traceFile) close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.f == nil {
		return nil
	}
	_, err := f.f.Write([]byte{']'})
	return errors.Join(err, f.f.Close())
}

// Trace is one sampled request's timeline.
type Trace struct {
	tracer *Tracer
	scope  *scope
	id     uint64
	model  string
	parent *Trace // the trace of the request this one serves (Child), or nil

	mu        sync.Mutex // guards the fields below
	version   int64
	requestID string
	events    []event
	tensors   []tensorChunk
	finished  bool
	// children are the finished child traces an opentelemetry export
	// nests under this one's span; Triton's mode writes each on its own.
	children []*spanRecord
}

var (
	_ inference.TensorTracer = (*Trace)(nil)
	_ inference.Span         = (*Trace)(nil)
)

// spanRecord is a finished trace as an export sees it.
type spanRecord struct {
	id, parent uint64
	model      string
	version    int64
	requestID  string
	events     []event
	children   []*spanRecord
}

type event struct {
	name string
	at   time.Time
}

// ID is the trace's id, unique in the process.
func (tr *Trace) ID() uint64 {
	if tr == nil {
		return 0
	}
	return tr.id
}

// Record notes that the request reached a point of its life (a Triton
// activity name such as HTTP_RECV_START) at time at. Timestamps are kept
// only at the TIMESTAMPS level, as in Triton.
func (tr *Trace) Record(name string, at time.Time) {
	if tr == nil || at.IsZero() || tr.scope.settings.Level&LevelTimestamps == 0 {
		return
	}
	tr.mu.Lock()
	tr.events = append(tr.events, event{name, at})
	tr.mu.Unlock()
}

// Request records the core's part of a request: REQUEST_START at start,
// the queue and compute phases from req.Timing, REQUEST_END at end, and
// the model version and request id the trace reports.
func (tr *Trace) Request(req *inference.Request, resp *inference.Response, start, end time.Time) {
	if tr == nil {
		return
	}
	version := req.ModelVersion
	if resp != nil {
		version = resp.ModelVersion
	}
	tr.Served(req, version, start, end)
}

// Served is Request for a caller that holds the answering version rather
// than the response: a model tracing the requests it sends (inference.Span).
func (tr *Trace) Served(req *inference.Request, modelVersion string, start, end time.Time) {
	if tr == nil {
		return
	}
	version := int64(-1)
	if v, err := strconv.ParseInt(modelVersion, 10, 64); err == nil {
		version = v
	}
	tr.mu.Lock()
	tr.version = version
	tr.requestID = req.ID
	tr.mu.Unlock()
	tr.Record("REQUEST_START", start)
	tr.Record("QUEUE_START", req.Timing.QueueStart)
	tr.Record("COMPUTE_START", req.Timing.ComputeStart)
	tr.Record("COMPUTE_INPUT_END", req.Timing.ComputeInputEnd)
	tr.Record("COMPUTE_OUTPUT_START", req.Timing.ComputeOutputStart)
	tr.Record("COMPUTE_END", req.Timing.ComputeEnd)
	tr.Record("REQUEST_END", end)
}

// Attach makes req report into the trace: req.Span, so that the models
// serving req can trace the requests they send as children, and its
// tensors (req.TensorTrace) when the trace's level includes TENSORS. The
// front end calls it before handing req to the core. Triton's
// opentelemetry mode records no tensors ("Tensor level tracing is not
// supported"), and neither does Nereid's.
func (tr *Trace) Attach(req *inference.Request) {
	if tr == nil {
		return
	}
	req.Span = tr
	if tr.scope.settings.Level&LevelTensors != 0 {
		tr.attach(req)
	}
}

// Child opens the trace of a request sent on tr's behalf to model (an
// ensemble's step): it has an id of its own, tr's settings, and tr's id as
// its parent_id. It is taken whatever the sampling rate and count, which
// the parent's request has passed. A nil tr has no children.
func (tr *Trace) Child(model string) inference.Span {
	if tr == nil {
		return nil
	}
	sc := tr.scope
	sc.mu.Lock()
	sc.created++ // collected when it finishes: the scope flushes after it
	sc.mu.Unlock()
	return &Trace{tracer: tr.tracer, scope: sc, id: tr.tracer.nextID.Add(1), model: model, parent: tr}
}

func (tr *Trace) attach(req *inference.Request) {
	if tr.scope.settings.Mode != ModeTriton {
		t := tr.tracer
		t.tensorsUnsupported.Do(func() {
			t.log.Error().Msg("Tensor level tracing is not supported by the mode: OPENTELEMETRY")
		})
		return
	}
	req.TensorTrace = tr
}

// TraceTensors renders the tensors of one activity into Triton's JSON
// records. The core calls it through req.TensorTrace; the data is read
// before it returns.
func (tr *Trace) TraceTensors(activity inference.TensorActivity, tensors []inference.Tensor) {
	if tr == nil || len(tensors) == 0 {
		return
	}
	records := appendTensorRecords(nil, tr.id, activity, tensors)
	tr.mu.Lock()
	if !tr.finished {
		tr.tensors = append(tr.tensors, tensorChunk{activity: activity, records: records})
	}
	tr.mu.Unlock()
}

// Finish writes the trace. It is called once, after the last Record.
func (tr *Trace) Finish() {
	if tr == nil {
		return
	}
	tr.mu.Lock()
	if tr.finished {
		tr.mu.Unlock()
		return
	}
	tr.finished = true
	tensors := tr.tensors
	tr.tensors = nil // a pooled request may hold tr until it is reused
	sp := &spanRecord{id: tr.id, model: tr.model, version: tr.version, requestID: tr.requestID, events: tr.events, children: tr.children}
	tr.children = nil
	tr.mu.Unlock()
	if tr.parent != nil {
		sp.parent = tr.parent.id
	}
	t := tr.tracer
	t.mu.Lock()
	closed, exp := t.closed, t.otel
	t.mu.Unlock()
	if closed {
		return
	}
	switch tr.scope.settings.Mode {
	case ModeOpenTelemetry:
		if tr.parent != nil && tr.parent.adopt(sp) {
			return // exported under the parent's span
		}
		if exp != nil {
			exp.export(sp)
		}
	default:
		tr.scope.record(t, tritonRecords(sp, tensors, tr.scope.settings.Level&LevelTimestamps != 0))
	}
}

// adopt keeps a finished child for tr's export, unless tr is finished
// already (a child that outlives its parent is exported on its own).
func (tr *Trace) adopt(child *spanRecord) bool {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.finished {
		return false
	}
	tr.children = append(tr.children, child)
	return true
}

// tritonRecords renders a trace as Triton does. At the TIMESTAMPS level:
// a record naming the model just before REQUEST_START (first when there is
// none), then one record per timestamp in the order recorded, each in
// nanoseconds of the monotonic clock. At the TENSORS level: the tensor
// records, each activity's after the timestamp it follows in Triton (see
// tensorAnchor) or, without that timestamp, at the end in the order
// reported. Triton writes the model record with REQUEST_START, a
// timestamp, so TENSORS alone writes tensor records only.
func tritonRecords(sp *spanRecord, tensors []tensorChunk, timestamps bool) []byte {
	id, events := sp.id, sp.events
	var b bytes.Buffer
	next := func() {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
	}
	placed := make([]bool, len(tensors))
	if timestamps {
		wroteHeader := !slices.ContainsFunc(events, func(e event) bool { return e.name == "REQUEST_START" })
		if wroteHeader {
			writeHeader(&b, sp)
		}
		for _, e := range events {
			if e.name == "REQUEST_START" && !wroteHeader {
				next()
				writeHeader(&b, sp)
				wroteHeader = true
			}
			next()
			fmt.Fprintf(&b, `{"id":%d,"timestamps":[{"name":"%s","ns":%d}]}`, id, e.name, monotonicNS(e.at))
			for i, c := range tensors {
				if !placed[i] && tensorAnchor(c.activity) == e.name {
					next()
					b.Write(c.records)
					placed[i] = true
				}
			}
		}
	}
	for i, c := range tensors {
		if !placed[i] {
			next()
			b.Write(c.records)
		}
	}
	return b.Bytes()
}

// writeHeader writes the record naming the trace's model; a child trace
// (an ensemble's step) names its parent's id as Triton does.
func writeHeader(b *bytes.Buffer, sp *spanRecord) {
	fmt.Fprintf(b, `{"id":%d,"model_name":%s,"model_version":%d`, sp.id, jsonString(sp.model), sp.version)
	if sp.requestID != "" {
		fmt.Fprintf(b, `,"request_id":%s`, jsonString(sp.requestID))
	}
	if sp.parent != 0 {
		fmt.Fprintf(b, `,"parent_id":%d`, sp.parent)
	}
	b.WriteByte('}')
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
