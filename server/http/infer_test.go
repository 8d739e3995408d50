package httpfront

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/nereid-project/nereid/inference"
)

// splitBinary splits a response body at its Inference-Header-Content-Length.
func splitBinary(t *testing.T, r result) (header []byte, bin []byte) {
	t.Helper()
	hl := r.header.Get(headerInferHeaderLength)
	if hl == "" {
		return r.body, nil
	}
	n, err := strconv.Atoi(hl)
	if err != nil || n > len(r.body) {
		t.Fatalf("bad %s %q for a %d-byte body", headerInferHeaderLength, hl, len(r.body))
	}
	return r.body[:n], r.body[n:]
}

const allTypesJSON = `{"id":"r1","inputs":[` +
	`{"name":"INPUT_BOOL","datatype":"BOOL","shape":[2],"data":[true,false]},` +
	`{"name":"INPUT_U8","datatype":"UINT8","shape":[2],"data":[0,255]},` +
	`{"name":"INPUT_U16","datatype":"UINT16","shape":[2],"data":[0,65535]},` +
	`{"name":"INPUT_U32","datatype":"UINT32","shape":[2],"data":[0,4294967295]},` +
	`{"name":"INPUT_U64","datatype":"UINT64","shape":[2],"data":[0,18446744073709551615]},` +
	`{"name":"INPUT_I8","datatype":"INT8","shape":[2],"data":[-128,127]},` +
	`{"name":"INPUT_I16","datatype":"INT16","shape":[2],"data":[-32768,32767]},` +
	`{"name":"INPUT_I32","datatype":"INT32","shape":[2,2],"data":[[-2147483648,2147483647],[0,-1]]},` +
	`{"name":"INPUT_I64","datatype":"INT64","shape":[2],"data":[-9223372036854775808,9223372036854775807]},` +
	`{"name":"INPUT_FP32","datatype":"FP32","shape":[4],"data":[1,0.1,-2.5e-7,3.4028234663852886e38]},` +
	`{"name":"INPUT_FP64","datatype":"FP64","shape":[3,2],"data":[[1,0.1],[1e21,1.5e300],[-0.0,123456789012]]},` +
	`{"name":"INPUT_BYTES","datatype":"BYTES","shape":[3],"data":["hello","","\u00e9\n\"q\"\\"]}` +
	`]}`

func TestInferJSONAllTypes(t *testing.T) {
	h := newHarness(t, Options{})
	r := h.do("POST", "/v2/models/any/infer", []byte(allTypesJSON))
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if r.header.Get(headerInferHeaderLength) != "" {
		t.Error("JSON response carries Inference-Header-Content-Length")
	}
	golden(t, "infer_all_types.json", r.body)

	// The decoded tensors, as the core saw them.
	req := h.core.lastReq
	if req.ID != "r1" || req.ModelName != "any" || len(req.Inputs) != 12 {
		t.Fatalf("request %+v", req)
	}
	le := binary.LittleEndian
	checks := map[string][]byte{
		"INPUT_BOOL":  {1, 0},
		"INPUT_U8":    {0, 255},
		"INPUT_U16":   le.AppendUint16(le.AppendUint16(nil, 0), 65535),
		"INPUT_U64":   le.AppendUint64(le.AppendUint64(nil, 0), math.MaxUint64),
		"INPUT_I8":    {0x80, 0x7f},
		"INPUT_I64":   le.AppendUint64(le.AppendUint64(nil, 1<<63), math.MaxInt64),
		"INPUT_FP32":  appendF32(nil, 1, 0.1, -2.5e-7, math.MaxFloat32),
		"INPUT_BYTES": inference.AppendBytesElement(inference.AppendBytesElement(inference.AppendBytesElement(nil, []byte("hello")), nil), []byte("é\n\"q\"\\")),
	}
	for _, in := range req.Inputs {
		if want, ok := checks[in.Name]; ok && !bytes.Equal(in.Data, want) {
			t.Errorf("%s data %v, want %v", in.Name, in.Data, want)
		}
		if err := in.ValidateData(); err != nil {
			t.Errorf("%s: %v", in.Name, err)
		}
	}
	if got := req.Input("INPUT_I32").Shape; !reflect.DeepEqual(got, []int64{2, 2}) {
		t.Errorf("nested shape %v", got)
	}
}

func appendF32(dst []byte, vs ...float32) []byte {
	for _, v := range vs {
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(v))
	}
	return dst
}

func appendF64(dst []byte, vs ...float64) []byte {
	for _, v := range vs {
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(v))
	}
	return dst
}

func TestInferBinaryAllTypes(t *testing.T) {
	h := newHarness(t, Options{})
	type in struct {
		dt    string
		shape string
		data  []byte
	}
	inputs := []in{
		{"BOOL", "[3]", []byte{1, 0, 1}},
		{"UINT8", "[2]", []byte{1, 2}},
		{"UINT16", "[1]", []byte{1, 2}},
		{"UINT32", "[1]", []byte{1, 2, 3, 4}},
		{"UINT64", "[1]", []byte{1, 2, 3, 4, 5, 6, 7, 8}},
		{"INT8", "[2]", []byte{0xff, 1}},
		{"INT16", "[1]", []byte{0xff, 0xff}},
		{"INT32", "[2]", appendF32(nil, 1, 2)},
		{"INT64", "[1]", []byte{8, 7, 6, 5, 4, 3, 2, 1}},
		{"FP16", "[2]", []byte{0x00, 0x3c, 0x00, 0xc0}},
		{"BF16", "[1]", []byte{0x80, 0x3f}},
		{"FP32", "[2]", appendF32(nil, 1.5, -2)},
		{"FP64", "[1]", appendF64(nil, math.Pi)},
		{"BYTES", "[2]", inference.AppendBytesElement(inference.AppendBytesElement(nil, []byte("ab")), []byte{0, 0xff})},
		{"INT32", "[0]", nil},
	}
	var hdr strings.Builder
	hdr.WriteString(`{"inputs":[`)
	var outs []string
	var blobs [][]byte
	var all []byte
	for i, x := range inputs {
		if i > 0 {
			hdr.WriteString(",")
		}
		name := "INPUT" + strconv.Itoa(i)
		hdr.WriteString(`{"name":"` + name + `","datatype":"` + x.dt + `","shape":` + x.shape +
			`,"parameters":{"binary_data_size":` + strconv.Itoa(len(x.data)) + `}}`)
		outs = append(outs, `{"name":"OUTPUT`+strconv.Itoa(i)+`","parameters":{"binary_data":true}}`)
		blobs = append(blobs, x.data)
		all = append(all, x.data...)
	}
	hdr.WriteString(`],"outputs":[` + strings.Join(outs, ",") + `]}`)
	body, hl := binaryBody(hdr.String(), blobs...)
	r := h.do("POST", "/v2/models/any/infer", body, headerInferHeaderLength, hl)
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/octet-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	header, bin := splitBinary(t, r)
	if !bytes.Equal(bin, all) {
		t.Errorf("binary outputs %v, want %v", bin, all)
	}
	golden(t, "infer_binary_header.json", header)
	for i, x := range inputs {
		got := h.core.lastReq.Inputs[i]
		if got.DataType.String() != x.dt || !bytes.Equal(got.Data, x.data) {
			t.Errorf("input %d: %s %v, want %s %v", i, got.DataType, got.Data, x.dt, x.data)
		}
	}
}

func TestInferMixedOutputs(t *testing.T) {
	h := newHarness(t, Options{})
	h.core.respID = ""
	body, hl := binaryBody(`{"parameters":{"binary_data_output":true},"inputs":[`+
		`{"name":"INPUT0","datatype":"INT32","shape":[1,2],"parameters":{"binary_data_size":8}},`+
		`{"name":"INPUT1","datatype":"FP32","shape":[1,1],"data":[[2.5]]},`+
		`{"name":"INPUT2","datatype":"UINT8","shape":[1],"data":[7]}],`+
		`"outputs":[{"name":"OUTPUT1","parameters":{"binary_data":false}},{"name":"OUTPUT0"},{"name":"OUTPUT2","parameters":{"binary_data":true}}]}`,
		appendF32(nil, 1, 2))
	r := h.do("POST", "/v2/models/any/infer", body, headerInferHeaderLength, hl)
	header, bin := splitBinary(t, r)
	want := `{"model_name":"any","model_version":"1","outputs":[` +
		`{"name":"OUTPUT1","datatype":"FP32","shape":[1,1],"data":[2.5]},` +
		`{"name":"OUTPUT0","datatype":"INT32","shape":[1,2],"parameters":{"binary_data_size":8}},` +
		`{"name":"OUTPUT2","datatype":"UINT8","shape":[1],"parameters":{"binary_data_size":1}}]}`
	if r.status != 200 || string(header) != want {
		t.Errorf("got %d %s\nwant %s", r.status, header, want)
	}
	if !bytes.Equal(bin, append(appendF32(nil, 1, 2), 7)) {
		t.Errorf("binary %v", bin)
	}
	if _, ok := h.core.lastReq.Parameters["binary_data_output"]; ok {
		t.Error("binary_data_output reached the core")
	}

	// No outputs listed: all of them, as JSON by default.
	r = h.do("POST", "/v2/models/any/infer", []byte(`{"inputs":[{"name":"INPUT0","datatype":"INT8","shape":[2],"data":[1,-1]}]}`))
	r.expect(t, 200, `{"model_name":"any","model_version":"1","outputs":[{"name":"OUTPUT0","datatype":"INT8","shape":[2],"data":[1,-1]}]}`)

	// A zero-sized binary output says so but adds no binary part.
	r = h.do("POST", "/v2/models/any/infer", []byte(`{"parameters":{"binary_data_output":true},"inputs":[{"name":"INPUT0","datatype":"INT8","shape":[0],"data":[]}]}`))
	r.expect(t, 200, `{"model_name":"any","model_version":"1","outputs":[{"name":"OUTPUT0","datatype":"INT8","shape":[0],"parameters":{"binary_data_size":0}}]}`)
	if ct := r.header.Get("Content-Type"); ct != "application/json" || r.header.Get(headerInferHeaderLength) != "" {
		t.Errorf("zero-size binary response headers %v", r.header)
	}
}

func TestInferResponseFields(t *testing.T) {
	h := newHarness(t, Options{})
	h.core.respParams = inference.Parameters{"z": "last", "a": int64(-1), "f": 0.5, "b": true, "u": uint64(math.MaxUint64)}
	h.core.outputParams = inference.Parameters{"note": "x"}
	r := h.do("POST", "/v2/models/any/versions/2/infer", []byte(`{"id":"abc","inputs":[{"name":"INPUT0","datatype":"BOOL","shape":[1],"data":[true]}],"outputs":[{"name":"OUTPUT0","parameters":{"binary_data":true}}]}`))
	header, _ := splitBinary(t, r)
	want := `{"id":"abc","model_name":"any","model_version":"1","parameters":{"a":-1,"b":true,"f":0.5,"u":18446744073709551615,"z":"last"},` +
		`"outputs":[{"name":"OUTPUT0","datatype":"BOOL","shape":[1],"parameters":{"binary_data_size":1,"note":"x"}}]}`
	if string(header) != want {
		t.Errorf("got %s\nwant %s", header, want)
	}
	if h.core.lastReq.ModelVersion != "2" {
		t.Errorf("version %q", h.core.lastReq.ModelVersion)
	}
	r = h.do("POST", "/v2/models/any/infer", []byte(`{"inputs":[{"name":"INPUT0","datatype":"BOOL","shape":[1],"data":[true]}]}`))
	if !strings.Contains(string(r.body), `{"name":"OUTPUT0","datatype":"BOOL","shape":[1],"parameters":{"note":"x"},"data":[true]}`) {
		t.Errorf("JSON output parameters: %s", r.body)
	}
	h.core.respID = "from-core"
	r = h.do("POST", "/v2/models/any/infer", []byte(`{"inputs":[]}`))
	if !strings.HasPrefix(string(r.body), `{"id":"from-core","model_name":"any"`) {
		t.Errorf("core id: %s", r.body)
	}
}

func TestInferNonFiniteFloats(t *testing.T) {
	h := newHarness(t, Options{})
	body, hl := binaryBody(`{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[4],"parameters":{"binary_data_size":16}}]}`,
		appendF32(nil, float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.Copysign(0, -1))))
	r := h.do("POST", "/v2/models/any/infer", body, headerInferHeaderLength, hl)
	r.expect(t, 200, `{"model_name":"any","model_version":"1","outputs":[{"name":"OUTPUT0","datatype":"FP32","shape":[4],"data":[NaN,Infinity,-Infinity,-0.0]}]}`)
}

// Triton parses request JSON with rapidjson's kParseNanAndInfFlag, so NaN,
// Inf and Infinity (signed or not) are accepted as floating-point data;
// perf_analyzer's random FP32 data produces them.
func TestInferJSONNonFiniteInputs(t *testing.T) {
	h := newHarness(t, Options{})
	r := h.do("POST", "/v2/models/any/infer", []byte(`{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[6],"data":[NaN, -NaN,Inf,-Inf,Infinity,[-Infinity]]}]}`))
	r.expect(t, 200, `{"model_name":"any","model_version":"1","outputs":[{"name":"OUTPUT0","datatype":"FP32","shape":[6],"data":[NaN,NaN,Infinity,-Infinity,Infinity,-Infinity]}]}`)
	for _, bad := range []string{
		`{"inputs":[{"name":"INPUT0","datatype":"INT32","shape":[1],"data":[NaN]}]}`,
		`{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1],"data":[nan]}]}`,
		`{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1],"data":[Infinit]}]}`,
	} {
		if r := h.do("POST", "/v2/models/any/infer", []byte(bad)); r.status != 400 {
			t.Errorf("%s: status %d, want 400: %s", bad, r.status, r.body)
		}
	}
}

func TestInferParameters(t *testing.T) {
	h := newHarness(t, Options{})
	h.do("POST", "/v2/models/any/infer", []byte(`{"parameters":{"sequence_id":42,"sequence_start":true,"sequence_end":false,"priority":1,"timeout":100,`+
		`"binary_data_output":false,"custom_int":-5,"custom_big":18446744073709551615,"custom_float":1.5,"custom_exp":1e3,"custom_bool":true,"custom_str":"s","headers":"h"},"inputs":[]}`)).expect(t, 200,
		`{"model_name":"any","model_version":"1","outputs":[]}`)
	want := inference.Parameters{
		"sequence_id": int64(42), "sequence_start": true, "sequence_end": false, "priority": int64(1), "timeout": int64(100),
		"custom_int": int64(-5), "custom_big": float64(math.MaxUint64), "custom_float": 1.5, "custom_exp": 1000.0, "custom_bool": true,
		"custom_str": "s", "headers": "h",
	}
	if got := h.core.lastReq.Parameters; !reflect.DeepEqual(got, want) {
		t.Errorf("parameters %#v\nwant %#v", got, want)
	}
	h.do("POST", "/v2/models/any/infer", []byte(`{"parameters":{"sequence_id":"corr-1"},"inputs":[]}`))
	if got := h.core.lastReq.Parameters["sequence_id"]; got != "corr-1" {
		t.Errorf("string sequence_id %v", got)
	}
	h.do("POST", "/v2/models/any/infer", []byte(`{"inputs":[],"outputs":[{"name":"OUT","parameters":{"classification":3,"custom":"c"}},{"name":"OUT"}]}`))
	if got := h.core.lastReq.Outputs; len(got) != 1 || got[0].Parameters["classification"] != int64(3) || got[0].Parameters["custom"] != "c" {
		t.Errorf("outputs %+v", got)
	}
}

func TestInferRaw(t *testing.T) {
	h := newHarness(t, Options{})
	data := appendF32(nil, 1, 2, 3)
	r := h.do("POST", "/v2/models/raw_fp32/infer", data, headerInferHeaderLength, "0")
	header, bin := splitBinary(t, r)
	if r.status != 200 || string(header) != `{"model_name":"raw_fp32","model_version":"1","outputs":[{"name":"OUTPUT0","datatype":"FP32","shape":[3],"parameters":{"binary_data_size":12}}]}` {
		t.Errorf("got %d %s", r.status, header)
	}
	if !bytes.Equal(bin, data) {
		t.Errorf("binary %v", bin)
	}
	in := h.core.lastReq.Inputs[0]
	if in.Name != "INPUT0" || in.DataType != inference.FP32 || !reflect.DeepEqual(in.Shape, []int64{3}) {
		t.Errorf("raw input %+v", in)
	}

	h.do("POST", "/v2/models/raw_batched/infer", make([]byte, 10), headerInferHeaderLength, "0")
	if got := h.core.lastReq.Inputs[0].Shape; !reflect.DeepEqual(got, []int64{1, 2, 5}) {
		t.Errorf("batched raw shape %v", got)
	}
	h.do("POST", "/v2/models/raw_batched/infer", make([]byte, 9), headerInferHeaderLength, "0").expectError(t, 400, "unexpected total byte size 9")

	h.do("POST", "/v2/models/raw_bytes/infer", []byte("hello"), headerInferHeaderLength, "0")
	if got := h.core.lastReq.Inputs[0]; !bytes.Equal(got.Data, inference.AppendBytesElement(nil, []byte("hello"))) || !reflect.DeepEqual(got.Shape, []int64{1}) {
		t.Errorf("raw BYTES input %+v", got)
	}
	h.do("POST", "/v2/models/simple/infer", data, headerInferHeaderLength, "0").expectError(t, 400, "exactly 1 input")
	h.do("POST", "/v2/models/raw_two_vars/infer", data, headerInferHeaderLength, "0").expectError(t, 400, "more than one variable-sized dimension")
}

func TestInferCompression(t *testing.T) {
	h := newHarness(t, Options{})
	plain := []byte(`{"inputs":[{"name":"INPUT0","datatype":"INT32","shape":[3],"data":[1,2,3]}]}`)
	want := `{"model_name":"any","model_version":"1","outputs":[{"name":"OUTPUT0","datatype":"INT32","shape":[3],"data":[1,2,3]}]}`

	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(plain)
	zw.Close()
	var zl bytes.Buffer
	lw := zlib.NewWriter(&zl)
	lw.Write(plain)
	lw.Close()

	for _, tc := range []struct {
		enc  string
		body []byte
	}{{"gzip", gz.Bytes()}, {"deflate", zl.Bytes()}, {"identity", plain}} {
		r := h.do("POST", "/v2/models/any/infer", tc.body, "Content-Encoding", tc.enc)
		r.expect(t, 200, want)
	}

	for _, accept := range []string{"gzip", "deflate", "gzip;q=0.5, deflate;q=0.8", "br, identity;q=0.1", "identity, gzip"} {
		r := h.do("POST", "/v2/models/any/infer", plain, "Accept-Encoding", accept)
		var got []byte
		switch enc := r.header.Get("Content-Encoding"); enc {
		case "gzip":
			zr, err := gzip.NewReader(bytes.NewReader(r.body))
			if err != nil {
				t.Fatal(err)
			}
			got, _ = io.ReadAll(zr)
		case "deflate":
			zr, err := zlib.NewReader(bytes.NewReader(r.body))
			if err != nil {
				t.Fatal(err)
			}
			got, _ = io.ReadAll(zr)
		case "":
			got = r.body
		default:
			t.Fatalf("Content-Encoding %q", enc)
		}
		wantEnc := map[string]string{"gzip": "gzip", "deflate": "deflate", "gzip;q=0.5, deflate;q=0.8": "deflate", "br, identity;q=0.1": "", "identity, gzip": ""}[accept]
		if r.header.Get("Content-Encoding") != wantEnc || string(got) != want {
			t.Errorf("Accept-Encoding %q: encoding %q body %s", accept, r.header.Get("Content-Encoding"), got)
		}
	}

	r := h.do("POST", "/v2/models/any/infer", plain, "Content-Encoding", "br")
	r.expect(t, 501, `{"error":"Unsupported compression type"}`)
	if got := r.header.Get("Accept-Encoding"); got != "gzip, deflate" {
		t.Errorf("Accept-Encoding on 501: %q", got)
	}
	h.do("POST", "/v2/models/any/infer", []byte("not gzip"), "Content-Encoding", "gzip").expectError(t, 400, "failed to decompress")
}

func TestInferSizeLimits(t *testing.T) {
	h := newHarness(t, Options{MaxInputSize: 256})
	big := []byte(`{"inputs":[],"pad":"` + strings.Repeat("x", 300) + `"}`)
	h.do("POST", "/v2/models/any/infer", big).expectError(t, 400, "exceeds the maximum allowed value of 256 bytes")

	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(big)
	zw.Close()
	if gz.Len() >= 256 {
		t.Fatalf("test body compresses to %d bytes", gz.Len())
	}
	h.do("POST", "/v2/models/any/infer", gz.Bytes(), "Content-Encoding", "gzip").expectError(t, 400, "decompressed request body exceeds the maximum allowed value of 256 bytes")

	// The limit holds for handlers embedded without the fasthttp server too.
	if got := tooLarge(300, 256); httpStatus(got) != 400 || !strings.Contains(got.Error(), "300 bytes") {
		t.Error(got)
	}
}

func TestInferHeaderForwarding(t *testing.T) {
	re, err := inference.CompileForwardPattern("http-header-forward-pattern", "my_header.*")
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, Options{HeaderForwardPattern: re})
	h.do("POST", "/v2/models/any/infer", []byte(`{"inputs":[]}`), "my_header_1", "v1", "MY_HEADER_2", "v2", "other", "x").expect(t, 200,
		`{"model_name":"any","model_version":"1","outputs":[]}`)
	want := inference.Parameters{"my_header_1": "v1", "MY_HEADER_2": "v2"}
	if got := h.core.lastReq.Parameters; !reflect.DeepEqual(got, want) {
		t.Errorf("forwarded %v", got)
	}

	all, _ := inference.CompileForwardPattern("http-header-forward-pattern", ".*")
	h2 := newHarness(t, Options{HeaderForwardPattern: all})
	for _, k := range []string{"priority", "sequence_id", "triton_anything"} {
		h2.do("POST", "/v2/models/any/infer", []byte(`{"inputs":[]}`), k, "1").expectError(t, 400, "reserved for Triton usage")
	}
	if re, _ := inference.CompileForwardPattern("http-header-forward-pattern", ""); re != nil {
		t.Error("empty pattern compiled")
	}
	if _, err := inference.CompileForwardPattern("http-header-forward-pattern", "("); err == nil {
		t.Error("bad pattern accepted")
	}
}

func TestInferErrors(t *testing.T) {
	h := newHarness(t, Options{})
	deep := `{"inputs":[{"name":"x","datatype":"INT32","shape":[1],"data":` + strings.Repeat("[", 70) + "1" + strings.Repeat("]", 70) + `}]}`
	tests := []struct {
		name   string
		model  string
		body   string
		bin    []byte
		hdrLen string // Inference-Header-Content-Length to send; "auto" for len(body)
		status int
		substr string
	}{
		{"truncated JSON", "", `{`, nil, "", 400, "failed to parse the request JSON buffer"},
		{"empty body", "", ``, nil, "", 400, "failed to parse the request JSON buffer"},
		{"not an object", "", `[]`, nil, "", 400, "expected an object"},
		{"trailing data", "", `{"inputs":[]} x`, nil, "", 400, "must not be followed by other values"},
		{"bad escape", "", `{"id":"\x","inputs":[]}`, nil, "", 400, "invalid escape"},
		{"control char", "", "{\"id\":\"a\x01\",\"inputs\":[]}", nil, "", 400, "invalid encoding in string"},
		{"bad surrogate", "", `{"id":"\ud800x","inputs":[]}`, nil, "", 400, "surrogate pair"},
		{"trailing comma", "", `{"inputs":[],}`, nil, "", 400, "missing a name for object member"},
		{"no inputs", "", `{}`, nil, "", 400, "Unable to parse 'inputs'"},
		{"inputs not array", "", `{"inputs":{}}`, nil, "", 400, "Unable to parse 'inputs'"},
		{"input not object", "", `{"inputs":[1]}`, nil, "", 400, "each input must be an object"},
		{"id not string", "", `{"id":1,"inputs":[]}`, nil, "", 400, "Unable to parse 'id'"},
		{"no name", "", `{"inputs":[{"datatype":"INT32","shape":[1],"data":[1]}]}`, nil, "", 400, "Unable to parse 'name'"},
		{"no datatype", "", `{"inputs":[{"name":"x","shape":[1],"data":[1]}]}`, nil, "", 400, "Unable to parse 'datatype'"},
		{"no shape", "", `{"inputs":[{"name":"x","datatype":"INT32","data":[1]}]}`, nil, "", 400, "Unable to parse 'shape'"},
		{"unknown datatype", "", `{"inputs":[{"name":"x","datatype":"FP8","shape":[1],"data":[1]}]}`, nil, "", 400, "invalid datatype 'FP8' for input 'x'"},
		{"negative dim", "", `{"inputs":[{"name":"x","datatype":"INT32","shape":[-1],"data":[1]}]}`, nil, "", 400, "Unable to parse 'shape'"},
		{"fractional dim", "", `{"inputs":[{"name":"x","datatype":"INT32","shape":[1.5],"data":[1]}]}`, nil, "", 400, "Unable to parse 'shape'"},
		{"huge dim", "", `{"inputs":[{"name":"x","datatype":"INT32","shape":[9223372036854775808],"data":[1]}]}`, nil, "", 400, "Unable to parse 'shape'"},
		{"overflowing shape", "", `{"inputs":[{"name":"x","datatype":"INT32","shape":[4294967296,4294967296,4294967296],"data":[1]}]}`, nil, "", 400, "element count overflows"},
		{"too few elements", "", `{"inputs":[{"name":"x","datatype":"INT32","shape":[3],"data":[1,2]}]}`, nil, "", 400, "Shape does not match true shape of 'data' field"},
		{"too many elements", "", `{"inputs":[{"name":"x","datatype":"INT32","shape":[1],"data":[1,2]}]}`, nil, "", 400, "Shape does not match true shape of 'data' field"},
		{"huge shape small data", "", `{"inputs":[{"name":"x","datatype":"INT32","shape":[1000000000],"data":[1]}]}`, nil, "", 400, "Shape does not match"},
		{"string for int", "", `{"inputs":[{"name":"x","datatype":"INT32","shape":[1],"data":["a"]}]}`, nil, "", 400, "expected an integer"},
		{"float for int", "", `{"inputs":[{"name":"x","datatype":"INT64","shape":[1],"data":[1.5]}]}`, nil, "", 400, "expected an integer"},
		{"int8 range", "", `{"inputs":[{"name":"x","datatype":"INT8","shape":[1],"data":[128]}]}`, nil, "", 400, "out of range for INT8"},
		{"uint16 range", "", `{"inputs":[{"name":"x","datatype":"UINT16","shape":[1],"data":[65536]}]}`, nil, "", 400, "out of range for UINT16"},
		{"negative uint", "", `{"inputs":[{"name":"x","datatype":"UINT8","shape":[1],"data":[-1]}]}`, nil, "", 400, "expected an unsigned integer"},
		{"number for bool", "", `{"inputs":[{"name":"x","datatype":"BOOL","shape":[1],"data":[1]}]}`, nil, "", 400, "expected a boolean"},
		{"number for bytes", "", `{"inputs":[{"name":"x","datatype":"BYTES","shape":[1],"data":[1]}]}`, nil, "", 400, "expected a string"},
		{"string for float", "", `{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":["1"]}]}`, nil, "", 400, "expected a number"},
		{"fp16 json", "", `{"inputs":[{"name":"x","datatype":"FP16","shape":[1],"data":[1]}]}`, nil, "", 400, "receiving FP16 data via JSON is not supported"},
		{"bf16 json", "", `{"inputs":[{"name":"x","datatype":"BF16","shape":[1],"data":[1]}]}`, nil, "", 400, "receiving BF16 data via JSON is not supported"},
		{"data not array", "", `{"inputs":[{"name":"x","datatype":"INT32","shape":[1],"data":5}]}`, nil, "", 400, "expected an array"},
		{"nesting too deep", "", deep, nil, "", 400, "nesting too deep"},
		{"data and binary", "", `{"inputs":[{"name":"x","datatype":"INT32","shape":[1],"data":[1],"parameters":{"binary_data_size":4}}]}`, nil, "", 400, "But set 'data' 'binary_data_size'"},
		{"no data", "", `{"inputs":[{"name":"x","datatype":"INT32","shape":[1]}]}`, nil, "", 400, "But no field is set"},
		{"duplicate input", "", `{"inputs":[{"name":"x","datatype":"INT32","shape":[1],"data":[1]},{"name":"x","datatype":"INT32","shape":[1],"data":[1]}]}`, nil, "", 400, "input 'x' already exists in request"},
		{"output no name", "", `{"inputs":[],"outputs":[{}]}`, nil, "", 400, "Unable to parse 'name' of an output"},
		{"outputs not array", "", `{"inputs":[],"outputs":1}`, nil, "", 400, "Unable to parse 'outputs'"},
		{"binary_data not bool", "", `{"inputs":[],"outputs":[{"name":"y","parameters":{"binary_data":1}}]}`, nil, "", 400, "Unable to parse 'binary_data'"},
		{"classification not uint", "", `{"inputs":[],"outputs":[{"name":"y","parameters":{"classification":"3"}}]}`, nil, "", 400, "Unable to set 'classification'"},
		{"binary size mismatch", "", `{"inputs":[{"name":"x","datatype":"INT32","shape":[2],"parameters":{"binary_data_size":4}}]}`, []byte{1, 2, 3, 4}, "auto", 400, "unexpected total byte size 4 for input 'x', expecting 8"},
		{"binary past body", "", `{"inputs":[{"name":"x","datatype":"INT32","shape":[25],"parameters":{"binary_data_size":100}}]}`, make([]byte, 8), "auto", 400, "unexpected size for input 'x', expecting 92 additional bytes for model 'any'"},
		{"binary without header length", "", `{"inputs":[{"name":"x","datatype":"INT32","shape":[1],"parameters":{"binary_data_size":4}}]}`, nil, "", 400, "expecting 4 additional bytes"},
		{"extra binary data", "", `{"inputs":[{"name":"x","datatype":"INT8","shape":[1],"parameters":{"binary_data_size":1}}]}`, []byte{1, 2}, "auto", 400, "unexpected additional input data for model 'any'"},
		{"bytes prefix past end", "", `{"inputs":[{"name":"x","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":7}}]}`, []byte{10, 0, 0, 0, 'a', 'b', 'c'}, "auto", 400, "claims 10 bytes but only 3 remain"},
		{"bytes count mismatch", "", `{"inputs":[{"name":"x","datatype":"BYTES","shape":[2],"parameters":{"binary_data_size":5}}]}`, []byte{1, 0, 0, 0, 'a'}, "auto", 400, "unexpected number of string elements 1 for inference input 'x', expecting 2"},
		{"binary size negative", "", `{"inputs":[{"name":"x","datatype":"INT8","shape":[1],"parameters":{"binary_data_size":-1}}]}`, nil, "", 400, "Unable to parse 'binary_data_size'"},
		{"header length negative", "", `{"inputs":[]}`, nil, "-1", 400, "inference header size should be in range (0, 13), got: -1"},
		{"header length too big", "", `{"inputs":[]}`, nil, "14", 400, "inference header size should be in range (0, 13), got: 14"},
		{"header length garbage", "", `{"inputs":[]}`, nil, "abc", 400, "inference header size should be in range"},
		{"triton_ parameter", "", `{"parameters":{"triton_x":1},"inputs":[]}`, nil, "", 400, "parameter keys starting with 'triton_' are reserved for Triton usage and should not be specified."},
		{"array parameter", "", `{"parameters":{"p":[1]},"inputs":[]}`, nil, "", 400, "parameter 'p' has invalid type"},
		{"null parameter", "", `{"parameters":{"p":null},"inputs":[]}`, nil, "", 400, "parameter 'p' has invalid type"},
		{"parameters not object", "", `{"parameters":[],"inputs":[]}`, nil, "", 400, "failed to get request params"},
		{"negative sequence_id", "", `{"parameters":{"sequence_id":-1},"inputs":[]}`, nil, "", 400, "Unable to parse 'sequence_id'"},
		{"bool sequence_start", "", `{"parameters":{"sequence_start":1},"inputs":[]}`, nil, "", 400, "Unable to parse 'sequence_start'"},
		{"string priority", "", `{"parameters":{"priority":"high"},"inputs":[]}`, nil, "", 400, "Unable to parse 'priority'"},
		{"fractional timeout", "", `{"parameters":{"timeout":1.5},"inputs":[]}`, nil, "", 400, "Unable to parse 'timeout'"},
		{"binary_data_output not bool", "", `{"parameters":{"binary_data_output":"yes"},"inputs":[]}`, nil, "", 400, "Unable to parse 'binary_data_output'"},
		{"decoupled model", "decoupled", `{"inputs":[]}`, nil, "", 501, "HTTP end point doesn't support models with decoupled transaction policy"},
		{"unknown model", "nope", `{"inputs":[]}`, nil, "", 404, "Request for unknown model: 'nope' is not found"},
		{"fp16 json output", "", `{"inputs":[{"name":"INPUT0","datatype":"FP16","shape":[1],"parameters":{"binary_data_size":2}}]}`, []byte{0, 0x3c}, "auto", 400, "sending FP16 data via JSON is not supported"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			model := tc.model
			if model == "" {
				model = "any"
			}
			var hdrs []string
			body := []byte(tc.body)
			switch tc.hdrLen {
			case "":
			case "auto":
				var hl string
				body, hl = binaryBody(tc.body, tc.bin)
				hdrs = []string{headerInferHeaderLength, hl}
			default:
				hdrs = []string{headerInferHeaderLength, tc.hdrLen}
			}
			h.do("POST", "/v2/models/"+model+"/infer", body, hdrs...).expectError(t, tc.status, tc.substr)
		})
	}
	h.do("GET", "/v2/models/any/infer", nil).expect(t, 405, `{"error":"Method Not Allowed"}`)
}

// TestInferResponseIsJSON checks that every JSON response parses.
func TestInferResponseIsJSON(t *testing.T) {
	h := newHarness(t, Options{})
	r := h.do("POST", "/v2/models/any/infer", []byte(allTypesJSON))
	var v map[string]any
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("%v: %s", err, r.body)
	}
}

func TestCancelledContextOnShutdown(t *testing.T) {
	h := newHarness(t, Options{})
	started := make(chan struct{})
	h.core.inferFn = func(ctx context.Context, _ *inference.Request) (*inference.Response, error) {
		close(started)
		<-ctx.Done()
		return nil, inference.Errorf(inference.CodeCancelled, "request cancelled")
	}
	done := make(chan result, 1)
	go func() { done <- h.do("POST", "/v2/models/any/infer", []byte(`{"inputs":[]}`)) }()
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // give up waiting at once: in-flight requests are cancelled
	_ = h.srv.Shutdown(ctx)
	r := <-done
	r.expect(t, 400, `{"error":"request cancelled"}`)
}

// TestRawWire speaks HTTP/1.1 by hand: lowercase header names (the server
// does not normalise them), a chunked body, and pipelined keep-alive.
func TestRawWire(t *testing.T) {
	h := newHarness(t, Options{})
	conn, err := h.ln.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hdr := `{"inputs":[{"name":"INPUT0","datatype":"INT8","shape":[2],"parameters":{"binary_data_size":2}}]}`
	body := hdr + "\x01\x02"
	req := "POST /v2/models/any/infer HTTP/1.1\r\nhost: x\r\ninference-header-content-length: " + strconv.Itoa(len(hdr)) +
		"\r\ntransfer-encoding: chunked\r\n\r\n" +
		strconv.FormatInt(int64(len(body[:10])), 16) + "\r\n" + body[:10] + "\r\n" +
		strconv.FormatInt(int64(len(body[10:])), 16) + "\r\n" + body[10:] + "\r\n0\r\n\r\n" +
		"GET /v2/health/ready HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"model_name":"any","model_version":"1","outputs":[{"name":"OUTPUT0","datatype":"INT8","shape":[2],"data":[1,2]}]}`
	if !strings.Contains(string(got), want) || strings.Count(string(got), "HTTP/1.1 200 OK") != 2 {
		t.Errorf("raw exchange:\n%s", got)
	}
}

func TestNilResponseIsInternal(t *testing.T) {
	h := newHarness(t, Options{})
	h.core.inferFn = func(context.Context, *inference.Request) (*inference.Response, error) { return nil, nil }
	h.do("POST", "/v2/models/any/infer", []byte(`{"inputs":[]}`)).expect(t, 500, `{"error":"model 'any' returned no response"}`)
}
