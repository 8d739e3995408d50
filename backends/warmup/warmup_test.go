package warmup

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

func config(t *testing.T, text string) *inferencepb.ModelConfig {
	t.Helper()
	cfg := &inferencepb.ModelConfig{}
	if err := prototext.Unmarshal([]byte(text), cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestSamples(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "warmup"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "warmup", "x.bin"), make([]byte, 8), 0o644); err != nil {
		t.Fatal(err)
	}
	ins := []Input{{Name: "X", DataType: inference.FP32, Dims: []int64{2}}, {Name: "S", DataType: inference.Int32, Dims: []int64{1}, Implicit: true}}
	cfg := config(t, `name: "m" max_batch_size: 4 model_warmup [
		{ name: "r" batch_size: 3 count: 2 inputs { key: "X" value { data_type: TYPE_FP32 dims: [ 2 ] random_data: true } } },
		{ name: "f" batch_size: 1 inputs { key: "X" value { data_type: TYPE_FP32 dims: [ 2 ] input_data_file: "x.bin" } } } ]`)
	samples, err := Samples(cfg, dir, ins)
	if err != nil {
		t.Fatal(err)
	}
	if len(samples) != 2 || len(samples[0].Batch) != 3 || samples[0].Count != 2 || len(samples[0].Batch[0].Inputs) != 2 {
		t.Fatalf("%+v", samples)
	}
	runs := 0
	err = Run(context.Background(), "m", samples, func(context.Context, []*inference.Request) error { runs++; return nil })
	if err != nil || runs != 3 {
		t.Fatalf("runs %d err %v", runs, err)
	}
	err = Run(context.Background(), "m", samples, func(context.Context, []*inference.Request) error {
		return inference.InvalidArg("boom")
	})
	if err == nil || !strings.Contains(err.Error(), "warm-up sample 'r' failed: boom") || inference.CodeOf(err) != inference.CodeInvalidArg {
		t.Fatalf("%v", err)
	}
	var ie *inference.Error
	if !errors.As(err, &ie) {
		t.Fatal("not an inference error")
	}

	for text, want := range map[string]string{
		`name: "m" max_batch_size: 4 model_warmup [ { name: "big" batch_size: 5 inputs { key: "X" value { data_type: TYPE_FP32 dims: [ 2 ] zero_data: true } } } ]`:       "exceeds max_batch_size",
		`name: "m" max_batch_size: 4 model_warmup [ { name: "none" batch_size: 1 } ]`:                                                                                     "no data for input 'X'",
		`name: "m" max_batch_size: 4 model_warmup [ { name: "t" batch_size: 1 inputs { key: "X" value { data_type: TYPE_INT8 dims: [ 2 ] zero_data: true } } } ]`:         "has data_type TYPE_INT8",
		`name: "m" max_batch_size: 4 model_warmup [ { name: "p" batch_size: 1 inputs { key: "X" value { data_type: TYPE_FP32 dims: [ 2 ] input_data_file: "../x" } } } ]`: "inside the model's warmup directory",
	} {
		if _, err := Samples(config(t, text), dir, ins); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: want %q", err, want)
		}
	}
}
