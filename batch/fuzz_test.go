package batch

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// The records of a data set are untrusted input: a line or a row may be
// anything, and must give a record or its error, never a panic, and a
// good record's tensors must hold what their shapes say.

func FuzzParseJSON(f *testing.F) {
	for _, s := range []string{
		`{"INPUT0":[1,2,3],"INPUT1":[[4],[5]]}`, `[1,2,3,4]`, `{"X":[[1,2,3,4],[5,6,7,8]]}`, `{"TEXT":["a"],"SCORE":1}`,
		`{"inputs":[{"name":"X","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}`, `{"H":[1.5,-2]}`, `{"G":[[1,2],[3,4]]}`,
		`{"X":[[],[]]}`, `{"inputs":[{}]}`, `[[[[`, `{"X":"\u0000"}`,
	} {
		f.Add([]byte(s))
	}
	models := []*Model{simpleModel, vecModel, gridModel, textModel, halfModel}
	f.Fuzz(func(t *testing.T, line []byte) {
		for _, m := range models {
			checkRecord(t, m, (&parser{model: m}).parseJSON(line))
		}
	})
}

func FuzzCSV(f *testing.F) {
	for _, s := range []string{
		"TEXT,SCORE\nhello,1\n\"a,b\",2\n", "a,b,c,d\n1,2,3,4\n", "X\n[1,2,3,4]\n", "INPUT0,INPUT1\n\"[1]\",\"[2]\"\n", "\"x\n",
	} {
		f.Add([]byte(s))
	}
	models := []*Model{simpleModel, vecModel, textModel, halfModel}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, m := range models {
			src, err := newCSVSource(bytes.NewReader(data), m)
			if err != nil {
				continue
			}
			p := &parser{model: m}
			for range 1000 {
				rec, err := src.next(true)
				if errors.Is(err, io.EOF) || err != nil {
					break
				}
				p.parse(rec)
				checkRecord(t, m, rec)
			}
		}
	})
}

func checkRecord(t *testing.T, m *Model, rec *record) {
	t.Helper()
	if rec.err != nil {
		return
	}
	for _, in := range rec.inputs {
		if err := in.ValidateData(); err != nil {
			t.Fatalf("model %s: a good record's input %s: %v", m.Name, in.Name, err)
		}
	}
	if rec.batch < 0 {
		t.Fatalf("batch %d", rec.batch)
	}
}

func FuzzDecodeResponse(f *testing.F) {
	f.Add([]byte(`{"model_name":"m","outputs":[{"name":"A","datatype":"INT32","shape":[1,2],"data":[1,2]}]}`), []byte{})
	f.Add([]byte(`{"outputs":[{"name":"B","datatype":"UINT8","shape":[2],"parameters":{"binary_data_size":2}}]}`), []byte{7, 8})
	f.Add([]byte(`{"outputs":[{"name":"C","datatype":"FP32","shape":[2],"parameters":{"shared_memory_region":"r","shared_memory_byte_size":8}}]}`), []byte{})
	f.Fuzz(func(t *testing.T, hdr, bin []byte) {
		resp, err := decodeResponse(hdr, bin)
		if err != nil {
			return
		}
		for _, o := range resp.Outputs {
			if err := o.ValidateData(); err != nil {
				t.Fatalf("output %s: %v", o.Name, err)
			}
		}
	})
}
