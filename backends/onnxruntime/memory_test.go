package onnxruntime

import (
	"context"
	"encoding/binary"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nereid-project/nereid/backends/backendtest"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/payload"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

func TestMemoryParameters(t *testing.T) {
	cfg := exampleConfig(t, "identity_fp32")
	p, err := parseParams(cfg)
	if err != nil || p.memArena != nil || p.memPattern != nil || p.initializersOnDevice != nil || p.shrinkArenas != "" {
		t.Fatalf("defaults: %+v, %v", p, err)
	}
	with := func(kv ...string) string {
		var b strings.Builder
		for i := 0; i < len(kv); i += 2 {
			b.WriteString(`parameters { key: "` + kv[i] + `" value: { string_value: "` + kv[i+1] + `" } }` + "\n")
		}
		return b.String()
	}
	cfg = parseConfig(t, `name: "m"`+"\n"+with("enable_mem_arena", "0", "enable_mem_pattern", "true",
		"session.use_device_allocator_for_initializers", "1", "memory.enable_memory_arena_shrinkage", "cpu:0"))
	p, err = parseParams(cfg)
	if err != nil || p.memArena == nil || *p.memArena || p.memPattern == nil || !*p.memPattern ||
		p.initializersOnDevice == nil || !*p.initializersOnDevice || p.shrinkArenas != "cpu:0" {
		t.Fatalf("set: %+v, %v", p, err)
	}
	if _, err := parseParams(parseConfig(t, `name: "m"`+"\n"+with("enable_mem_arena", "maybe"))); err == nil || !strings.Contains(err.Error(), "enable_mem_arena") {
		t.Fatalf("a bad value: %v", err)
	}
}

// Sessions with each memory setting load and answer, large runs (which
// shrink the arena) included.
func TestMemorySettingsRun(t *testing.T) {
	b := testBackend(t)
	base := exampleConfig(t, "identity_fp32")
	n := payload.LargeSize/4 + 1 // a large run
	data := make([]byte, 4*n)
	for i := 0; i < n; i++ {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(float32(i)))
	}
	for _, params := range []string{"", `"enable_mem_arena" value: { string_value: "0" }`,
		`"memory.enable_memory_arena_shrinkage" value: { string_value: "cpu:0" }`,
		`"session.use_device_allocator_for_initializers" value: { string_value: "1" }`} {
		cfg := parseConfig(t, "name: \"identity_fp32\"\n")
		cfg.Input, cfg.Output, cfg.MaxBatchSize = base.Input, base.Output, base.MaxBatchSize
		if params != "" {
			cfg = parseConfig(t, "name: \"identity_fp32\"\nparameters { key: "+params+" }\n")
			cfg.Input, cfg.Output, cfg.MaxBatchSize = base.Input, base.Output, base.MaxBatchSize
		}
		_, inst := loadModel(t, b, filepath.Join(examples, "identity_fp32"), cfg)
		for _, in := range [][]byte{data, backendtest.Float32s(1, 2), data, backendtest.Float32s(3)} {
			req := request(inference.Tensor{Name: "INPUT0", DataType: inference.FP32, Shape: []int64{1, int64(len(in) / 4)}, Data: in})
			resps, err := inst.Execute(context.Background(), []*inference.Request{req})
			if err != nil {
				t.Fatalf("%s: %v", params, err)
			}
			if got := resps[0].Outputs[0].Data; string(got) != string(in) {
				t.Fatalf("%s: output differs from input (%d bytes)", params, len(in))
			}
		}
	}
}

// BenchmarkArena compares ONNX Runtime's CPU memory arena on (its default)
// and off (enable_mem_arena "0") on the example models, one request at a
// time: what taking the arena out costs a model that does not see large
// payloads.
func BenchmarkArena(b *testing.B) {
	be := testBackend(b)
	mlpIn := make([]float32, 64*8)
	for i := range mlpIn {
		mlpIn[i] = float32(i%13) / 13
	}
	cases := []struct {
		model string
		req   func() *inference.Request
	}{
		{"simple", func() *inference.Request {
			v := backendtest.Int32s(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
			return request(inference.Tensor{Name: "INPUT0", DataType: inference.Int32, Shape: []int64{1, 16}, Data: v},
				inference.Tensor{Name: "INPUT1", DataType: inference.Int32, Shape: []int64{1, 16}, Data: v})
		}},
		{"identity_fp32", func() *inference.Request {
			return request(inference.Tensor{Name: "INPUT0", DataType: inference.FP32, Shape: []int64{1, 256}, Data: backendtest.Float32s(make([]float32, 256)...)})
		}},
		{"mlp_fp32", func() *inference.Request {
			return request(inference.Tensor{Name: "INPUT0", DataType: inference.FP32, Shape: []int64{8, 64}, Data: backendtest.Float32s(mlpIn...)})
		}},
	}
	for _, c := range cases {
		for _, arena := range []string{"on", "off"} {
			b.Run(c.model+"/arena="+arena, func(b *testing.B) {
				cfg := exampleConfig(b, c.model)
				if arena == "off" {
					cfg.Parameters = map[string]*inferencepb.ModelParameter{"enable_mem_arena": {StringValue: "0"}}
				}
				_, inst := loadModel(b, be, filepath.Join(examples, c.model), cfg)
				req := c.req()
				b.ReportAllocs()
				for b.Loop() {
					if _, err := inst.Execute(context.Background(), []*inference.Request{req}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
