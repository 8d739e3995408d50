package server

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/trace"
)

// tensorTraceConfig is an identity model with one input of each kind the
// tensor records render differently, behind the dynamic batcher.
const tensorTraceConfig = `
name: "tens"
backend: "identity"
max_batch_size: 4
dynamic_batching { }
input [
  { name: "INPUT0" data_type: TYPE_INT32 dims: [ 2 ] },
  { name: "INPUT1" data_type: TYPE_FP32 dims: [ 3 ] },
  { name: "INPUT2" data_type: TYPE_BOOL dims: [ 2 ] },
  { name: "INPUT3" data_type: TYPE_STRING dims: [ -1 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 2 ] },
  { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 3 ] },
  { name: "OUTPUT2" data_type: TYPE_BOOL dims: [ 2 ] },
  { name: "OUTPUT3" data_type: TYPE_STRING dims: [ -1 ] }
]
instance_group [ { count: 1 kind: KIND_CPU } ]
`

type tensorRec struct {
	ID         uint64 `json:"id"`
	ModelName  string `json:"model_name"`
	Timestamps []struct {
		Name string `json:"name"`
	} `json:"timestamps"`
	Activity string `json:"activity"`
	Tensor   *struct {
		Name  string `json:"name"`
		Data  string `json:"data"`
		Shape string `json:"shape"`
		DType string `json:"dtype"`
	} `json:"tensor"`
}

// newTensorTracer returns a tracer writing to a file in a temporary
// directory, with tracing off globally and the given level at rate 1 for
// model, set as the trace settings endpoints set it.
func newTensorTracer(t *testing.T, model string, levels ...string) (*trace.Tracer, string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "trace.json")
	s, err := trace.ParseConfig([]string{"triton,file=" + file})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := trace.New(trace.Options{Settings: s, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	u, err := trace.ParseUpdate(map[string][]string{"trace_level": levels, "trace_rate": {"1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Update(model, u); err != nil {
		t.Fatal(err)
	}
	return tr, file
}

// tracedInfer runs req through the core as the front ends do when the
// request is sampled.
func tracedInfer(t *testing.T, s *Server, tracer *trace.Tracer, req *inference.Request) *inference.Response {
	t.Helper()
	tr := tracer.Sample(req.ModelName)
	if tr == nil {
		t.Fatal("request not sampled")
	}
	defer tr.Finish()
	tr.Attach(req)
	start := time.Now()
	resp, err := s.Infer(context.Background(), req)
	tr.Request(req, resp, start, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// readTensorTrace closes the tracer, which writes the trace file, and
// parses the file.
func readTensorTrace(t *testing.T, tracer *trace.Tracer, file string) []tensorRec {
	t.Helper()
	if err := tracer.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var recs []tensorRec
	if err := json.Unmarshal(data, &recs); err != nil {
		t.Fatalf("trace file is not JSON: %v\n%s", err, data)
	}
	return recs
}

// tensorsByActivity maps activity → tensor name → "data|shape|dtype".
func tensorsByActivity(recs []tensorRec) map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, r := range recs {
		if r.Tensor == nil {
			continue
		}
		if out[r.Activity] == nil {
			out[r.Activity] = map[string]string{}
		}
		out[r.Activity][r.Tensor.Name] = r.Tensor.Data + "|" + r.Tensor.Shape + "|" + r.Tensor.DType
	}
	return out
}

func fp32le(v ...float32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

func tensorTraceRequest() *inference.Request {
	return &inference.Request{ID: "known", ModelName: "tens", Inputs: []inference.Tensor{
		{Name: "INPUT0", DataType: inference.Int32, Shape: []int64{1, 2}, Data: int32s(7, -8)},
		{Name: "INPUT1", DataType: inference.FP32, Shape: []int64{1, 3}, Data: fp32le(0.5, -1.25, 0.001)},
		{Name: "INPUT2", DataType: inference.Bool, Shape: []int64{1, 2}, Data: []byte{1, 0}},
		{Name: "INPUT3", DataType: inference.Bytes, Shape: []int64{1, 2}, Data: bytesTensor("hello", "w\u00f6rld")},
	}}
}

func TestTraceTensorsThroughCore(t *testing.T) {
	s := newModelServer(t, tensorTraceConfig, nil, Options{})
	tracer, file := newTensorTracer(t, "tens", "TENSORS")
	// A request refused before it reaches the scheduler has no tensor
	// records; the file stays valid JSON.
	bad := tensorTraceRequest()
	bad.Inputs[0].DataType = inference.Int64
	refused := tracer.Sample("tens")
	refused.Attach(bad)
	if _, err := s.Infer(context.Background(), bad); err == nil {
		t.Fatal("an INT64 INPUT0 was accepted")
	}
	refused.Request(bad, nil, time.Now(), time.Now())
	refused.Finish()
	tracedInfer(t, s, tracer, tensorTraceRequest())
	recs := readTensorTrace(t, tracer, file)

	in := map[string]string{
		"INPUT0": "7,-8|1,2|INT32",
		"INPUT1": "0.5,-1.25,0.001|1,3|FP32",
		"INPUT2": "1,0|1,2|BOOL",
		"INPUT3": `"hello","w` + "\u00f6" + `rld"|1,2|BYTES`,
	}
	want := map[string]map[string]string{
		"TENSOR_QUEUE_INPUT":   in,
		"TENSOR_BACKEND_INPUT": in,
		"TENSOR_BACKEND_OUTPUT": {
			"OUTPUT0": in["INPUT0"], "OUTPUT1": in["INPUT1"], "OUTPUT2": in["INPUT2"], "OUTPUT3": in["INPUT3"],
		},
	}
	if got := tensorsByActivity(recs); !reflect.DeepEqual(got, want) {
		t.Errorf("tensor records\n got %v\nwant %v", got, want)
	}
	// TENSORS alone: no model record and no timestamps, as in Triton.
	if len(recs) != 12 {
		t.Errorf("%d records, want 12 tensor records: %+v", len(recs), recs)
	}
	for _, r := range recs {
		if r.Tensor == nil || r.ModelName != "" || r.Timestamps != nil || r.ID != recs[0].ID {
			t.Errorf("record %+v", r)
		}
	}
}

func TestTraceTimestampsAndTensorsThroughCore(t *testing.T) {
	s := newModelServer(t, tensorTraceConfig, nil, Options{})
	tracer, file := newTensorTracer(t, "tens", "TIMESTAMPS", "TENSORS")
	tracedInfer(t, s, tracer, tensorTraceRequest())
	recs := readTensorTrace(t, tracer, file)
	var order []string
	for _, r := range recs {
		switch {
		case r.ModelName != "":
			order = append(order, "MODEL")
		case r.Tensor != nil:
			if order[len(order)-1] != r.Activity {
				order = append(order, r.Activity)
			}
		default:
			for _, ts := range r.Timestamps {
				order = append(order, ts.Name)
			}
		}
	}
	want := []string{"MODEL", "REQUEST_START", "QUEUE_START", "TENSOR_QUEUE_INPUT", "COMPUTE_START", "TENSOR_BACKEND_INPUT",
		"COMPUTE_INPUT_END", "COMPUTE_OUTPUT_START", "TENSOR_BACKEND_OUTPUT", "COMPUTE_END", "REQUEST_END"}
	if !reflect.DeepEqual(order, want) {
		t.Errorf("records\n got %v\nwant %v", order, want)
	}
	if n := len(tensorsByActivity(recs)["TENSOR_BACKEND_OUTPUT"]); n != 4 {
		t.Errorf("%d output tensors", n)
	}

	// TIMESTAMPS alone: the core gets no tensor tracer and the file no
	// tensor records.
	tracer, file = newTensorTracer(t, "tens", "TIMESTAMPS")
	req := tensorTraceRequest()
	tracedInfer(t, s, tracer, req)
	if req.TensorTrace != nil {
		t.Error("TIMESTAMPS alone attached a tensor tracer")
	}
	recs = readTensorTrace(t, tracer, file)
	if len(recs) == 0 {
		t.Fatal("no records")
	}
	for _, r := range recs {
		if r.Tensor != nil || r.Activity != "" {
			t.Errorf("tensor record at TIMESTAMPS: %+v", r)
		}
	}
}

// TestTraceTensorsFromSharedMemory checks that inputs read from shared
// memory are rendered as the backend sees them, although the request
// carried no data for them.
func TestTraceTensorsFromSharedMemory(t *testing.T) {
	s := newModelServer(t, shmConfig, nil, Options{AllowClientShm: true})
	ctx := context.Background()
	key := newShmObject(t, 4096)
	if err := s.RegisterSystemSharedMemory(ctx, "in", key, 0, 256); err != nil {
		t.Fatal(err)
	}
	words := bytesTensor("hello", "", "shared")
	writeObject(t, key, 8, int32s(7, -8, 9))
	writeObject(t, key, 40, words)
	tracer, file := newTensorTracer(t, "shm", "TENSORS")
	tracedInfer(t, s, tracer, &inference.Request{ModelName: "shm", Inputs: []inference.Tensor{
		{Name: "INPUT0", DataType: inference.Int32, Shape: []int64{1, 3}, Parameters: shmTensorParams("in", 8, 12)},
		{Name: "INPUT1", DataType: inference.Bytes, Shape: []int64{1, 3}, Parameters: shmTensorParams("in", 40, int64(len(words)))},
	}})
	// The region changes once the request is done: the trace keeps what
	// the backend saw.
	writeObject(t, key, 8, int32s(0, 0, 0))
	got := tensorsByActivity(readTensorTrace(t, tracer, file))
	in := map[string]string{"INPUT0": "7,-8,9|1,3|INT32", "INPUT1": `"hello","","shared"|1,3|BYTES`}
	want := map[string]map[string]string{
		"TENSOR_QUEUE_INPUT":    in,
		"TENSOR_BACKEND_INPUT":  in,
		"TENSOR_BACKEND_OUTPUT": {"OUTPUT0": in["INPUT0"], "OUTPUT1": in["INPUT1"]},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("tensor records\n got %v\nwant %v", got, want)
	}
}

// TestTraceTensorsOfSequence checks that the backend's inputs include the
// control and state inputs the sequence batcher adds, which the queue
// inputs do not.
func TestTraceTensorsOfSequence(t *testing.T) {
	s, err := loadTestModel(t, LoaderOptions{}, "seq", sequenceConfig, seqDir(t))
	if err != nil {
		t.Fatal(err)
	}
	tracer, file := newTensorTracer(t, "seq", "TENSORS")
	tracedInfer(t, s, tracer, &inference.Request{
		ModelName: "seq", Parameters: inference.Parameters{"sequence_id": uint64(11), "sequence_start": true, "sequence_end": true},
		Inputs: []inference.Tensor{{Name: "INPUT0", DataType: inference.Int32, Shape: []int64{1, 1}, Data: int32s(5)}},
	})
	got := tensorsByActivity(readTensorTrace(t, tracer, file))
	if want := map[string]string{"INPUT0": "5|1,1|INT32"}; !reflect.DeepEqual(got["TENSOR_QUEUE_INPUT"], want) {
		t.Errorf("queue inputs %v", got["TENSOR_QUEUE_INPUT"])
	}
	want := map[string]string{
		"INPUT0": "5|1,1|INT32",
		"INPUT1": "1|1,1|INT32",   // START
		"INPUT2": "11|1,1|UINT64", // CORRID
		"INPUT3": "-7|1,1|INT32",  // the initial state
	}
	if !reflect.DeepEqual(got["TENSOR_BACKEND_INPUT"], want) {
		t.Errorf("backend inputs\n got %v\nwant %v", got["TENSOR_BACKEND_INPUT"], want)
	}
}
