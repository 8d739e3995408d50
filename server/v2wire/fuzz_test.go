package v2wire

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

var fuzzRawConfigs = []*inferencepb.ModelConfig{
	testConfigs()["raw_fp32"],
	testConfigs()["raw_batched"],
	testConfigs()["raw_bytes"],
	testConfigs()["simple"],
}

var fuzzGenerateConfigs = []*inferencepb.ModelConfig{
	testConfigs()["gen_text"],
	testConfigs()["gen_batched"],
	testConfigs()["gen_sequence"],
	testConfigs()["simple"],
}

// FuzzDecodeInferRequest feeds arbitrary bodies to the request decoder:
// hdrLen < 0 decodes body as a JSON request, 0 as a raw binary request, and
// n > 0 as a JSON header of n bytes (modulo the body) followed by binary
// tensor data. Decoding must never panic, every tensor it accepts must be
// consistent with its shape, and echoing the tensors back must encode.
func FuzzDecodeInferRequest(f *testing.F) {
	f.Add([]byte(allTypesJSON), -1)
	f.Add([]byte(`{"id":"x","parameters":{"sequence_id":"s","priority":1,"custom":1.5,"binary_data_output":true},"inputs":[{"name":"a","datatype":"FP32","shape":[2,2],"data":[[1,2],[3,4e-3]]}],"outputs":[{"name":"a","parameters":{"binary_data":false,"classification":2}}]}`), -1)
	hdr := `{"inputs":[{"name":"a","datatype":"INT32","shape":[2],"parameters":{"binary_data_size":8}},{"name":"b","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":7}}]}`
	bin, _ := binaryBody(hdr, []byte{1, 0, 0, 0, 2, 0, 0, 0}, []byte{3, 0, 0, 0, 'a', 'b', 'c'})
	f.Add(bin, len(hdr))
	f.Add(bin, 0)
	f.Add([]byte{0, 0, 128, 63, 0, 0, 0, 64}, 0)
	f.Add([]byte(`{"inputs":[{"name":"x","datatype":"BYTES","shape":[2],"data":["\u00e9\ud83d\ude00","\\\"\/\b\f\n\r\t"]}]}`), -1)
	f.Add([]byte(`{"inputs":[{"name":"x","datatype":"INT8","shape":[1],"data":`+strings.Repeat("[", 80)+`1`+strings.Repeat("]", 80)+`}]}`), -1)
	f.Add([]byte(`{"inputs":[{"name":"x","datatype":"UINT64","shape":[0],"data":[]},{"name":"y","datatype":"BOOL","shape":[],"data":[true]}]}`), -1)
	f.Add([]byte(`{"inputs":[]}  `), -1)
	f.Add([]byte(`{"inputs":[{"name":"s","datatype":"INT32","shape":[4],"parameters":{"shared_memory_region":"r","shared_memory_offset":8,"shared_memory_byte_size":16}}],"outputs":[{"name":"s","parameters":{"binary_data":false,"shared_memory_region":"o","shared_memory_byte_size":16}}]}`), -1)
	f.Add([]byte(`{`), -1)
	f.Add([]byte(``), 5)

	f.Fuzz(func(t *testing.T, body []byte, hdrLen int) {
		c := &Call{}
		c.Req.ModelName = "fuzz"
		var err error
		switch {
		case hdrLen < 0:
			err = DecodeJSON(c, body, nil)
		case hdrLen == 0:
			err = DecodeRaw(c, body, fuzzRawConfigs[len(body)%len(fuzzRawConfigs)])
		default:
			n := hdrLen % (len(body) + 1)
			err = DecodeJSON(c, body[:n], body[n:])
		}
		if err != nil {
			if inference.CodeOf(err) == inference.CodeInternal {
				t.Fatalf("decode error without a status class: %v", err)
			}
			return
		}
		// Inputs in shared memory carry no data: the server core reads it
		// from the region. The others must be consistent.
		c.Req.Inputs = slices.DeleteFunc(c.Req.Inputs, func(in inference.Tensor) bool {
			_, shm := in.Parameters["shared_memory_region"]
			if shm && in.Data != nil {
				t.Fatalf("input %s in shared memory carries data", in.Name)
			}
			return shm
		})
		for i := range c.Req.Inputs {
			if err := c.Req.Inputs[i].ValidateData(); err != nil {
				t.Fatalf("accepted an inconsistent tensor: %v", err)
			}
		}
		// Echo every input back as an output, in JSON and in binary.
		resp := &inference.Response{ModelName: "fuzz", ModelVersion: "1", Outputs: c.Req.Inputs}
		for _, binaryOut := range []bool{false, true} {
			c.binaryOutput = binaryOut
			c.Req.Outputs, c.outKinds = nil, nil
			out, hl, _, err := AppendResponse(nil, c, resp)
			if err != nil {
				continue // FP16/BF16 cannot be JSON
			}
			header := out[:hl]
			if !bytes.Contains(header, []byte("NaN")) && !bytes.Contains(header, []byte("Infinity")) && !json.Valid(header) {
				t.Fatalf("invalid JSON response: %s", header)
			}
		}
	})
}

// FuzzDecodeGenerate feeds arbitrary bodies to the generate decoder for
// the test models: it must never panic, its errors carry a status class,
// every tensor it accepts is consistent with its shape and takes the
// datatype the model declares, and echoing them back as a generate
// response writes valid JSON.
func FuzzDecodeGenerate(f *testing.F) {
	f.Add([]byte(`{"id":"g","text_input":"hello","max_tokens":16,"temperature":0.5,"stream":true,"stop_ids":[1,2],"pair":[-1,1],"parameters":{"top_k":4,"seed":"x"},"extra":1.5}`), 0)
	f.Add([]byte(`{"text_input":["a"],"tokens":[1,2,3],"grid":[1.5,2,NaN,-Infinity]}`), 1)
	f.Add([]byte(`{"text_input":"\u00e9\ud83d\ude00","START":true}`), 2)
	f.Add([]byte(`{"INPUT0":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16],"INPUT1":[]}`), 3)
	f.Add([]byte(`{"parameters":{"text_input":"x","parameters":{}},"id":"i"}`), 0)
	f.Add([]byte(`{"tokens":[[1]],"text_input":{}}`), 1)
	f.Add([]byte(`{`), 0)
	f.Fuzz(func(t *testing.T, body []byte, model int) {
		if model < 0 {
			model = -model
		}
		cfg := fuzzGenerateConfigs[model%len(fuzzGenerateConfigs)]
		c := &Call{}
		c.Req.ModelName = cfg.GetName()
		if err := DecodeGenerate(c, body, cfg); err != nil {
			if inference.CodeOf(err) == inference.CodeInternal {
				t.Fatalf("decode error without a status class: %v", err)
			}
			return
		}
		for i := range c.Req.Inputs {
			in := &c.Req.Inputs[i]
			if err := in.ValidateData(); err != nil {
				t.Fatalf("accepted an inconsistent tensor: %v", err)
			}
			if want := inference.DataType(configInput(cfg, []byte(in.Name)).GetDataType()); in.DataType != want {
				t.Fatalf("input %s is %s, the model takes %s", in.Name, in.DataType, want)
			}
		}
		resp := &inference.Response{ModelName: cfg.GetName(), ModelVersion: "1", Outputs: c.Req.Inputs}
		out, err := AppendGenerateJSON(nil, &c.Req, resp)
		if err != nil {
			t.Fatalf("echo: %v", err)
		}
		if !bytes.Contains(out, []byte("NaN")) && !bytes.Contains(out, []byte("Infinity")) && !json.Valid(out) {
			t.Fatalf("invalid JSON response: %s", out)
		}
	})
}
