package onnxruntime

import (
	"context"
	"encoding/binary"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/payload"
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
		for _, in := range [][]byte{data, fp32Bytes(1, 2), data, fp32Bytes(3)} {
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
