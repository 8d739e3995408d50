package analyze

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/nereid-project/nereid/proto/inferencepb"
)

// mlpConfig is mlp_fp32's completed configuration, as Nereid serves it.
func mlpConfig() *inferencepb.ModelConfig {
	return &inferencepb.ModelConfig{
		Name: "mlp_fp32", Platform: "onnxruntime_onnx", MaxBatchSize: 64,
		Input:  []*inferencepb.ModelInput{{Name: "INPUT0", DataType: inferencepb.DataType_TYPE_FP32, Dims: []int64{64}}},
		Output: []*inferencepb.ModelOutput{{Name: "OUTPUT0", DataType: inferencepb.DataType_TYPE_FP32, Dims: []int64{16}}},
		SchedulingChoice: &inferencepb.ModelConfig_DynamicBatching{DynamicBatching: &inferencepb.ModelDynamicBatching{
			PreferredBatchSize: []int32{64}, PreserveOrdering: true,
		}},
		InstanceGroup: []*inferencepb.ModelInstanceGroup{{Name: "mlp_fp32", Kind: inferencepb.ModelInstanceGroup_KIND_CPU, Count: 1}},
		ModelWarmup: []*inferencepb.ModelWarmup{
			{Name: "one", BatchSize: 1},
			{Name: "sixteen", BatchSize: 16},
		},
	}
}

func TestDefaultSpace(t *testing.T) {
	for cpus, want := range map[int][]int{1: {1}, 2: {1, 2}, 3: {1, 2}, 16: {1, 2, 4}} {
		if got := DefaultSpace(cpus).Instances; !slices.Equal(got, want) {
			t.Errorf("DefaultSpace(%d).Instances = %v, want %v", cpus, got, want)
		}
	}
}

func TestConfigsGrid(t *testing.T) {
	s := Space{Instances: []int{2, 1, 2, 0}, MaxBatchSizes: []int{64, 1, 8, 128}, QueueDelaysUS: []uint64{500, 0}}
	got, notes := s.Configs(mlpConfig())
	var names []string
	for _, c := range got {
		names = append(names, c.String())
	}
	want := []string{
		"max batch 1, no dynamic batching, 1 instance",
		"max batch 8, delay 0 µs, preferred [8], 1 instance",
		"max batch 8, delay 500 µs, preferred [8], 1 instance",
		"max batch 64, delay 0 µs, preferred [64], 1 instance",
		"max batch 64, delay 500 µs, preferred [64], 1 instance",
		"max batch 1, no dynamic batching, 2 instances",
		"max batch 8, delay 0 µs, preferred [8], 2 instances",
		"max batch 8, delay 500 µs, preferred [8], 2 instances",
		"max batch 64, delay 0 µs, preferred [64], 2 instances",
		"max batch 64, delay 500 µs, preferred [64], 2 instances",
	}
	if !slices.Equal(names, want) {
		t.Errorf("configs:\n%s\nwant:\n%s", strings.Join(names, "\n"), strings.Join(want, "\n"))
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "128") || !strings.Contains(notes[0], "max_batch_size 64") {
		t.Errorf("notes = %q, want one naming 128 and the model's 64", notes)
	}
}

func TestConfigsPreferredSizesCapped(t *testing.T) {
	base := mlpConfig()
	base.GetDynamicBatching().PreferredBatchSize = []int32{4, 16, 32}
	got, _ := Space{Instances: []int{1}, MaxBatchSizes: []int{8, 16}, QueueDelaysUS: []uint64{0}}.Configs(base)
	if len(got) != 2 || !slices.Equal(got[0].PreferredBatchSize, []int32{4, 8}) || !slices.Equal(got[1].PreferredBatchSize, []int32{4, 16}) {
		t.Errorf("configs = %+v, want preferred [4 8] and [4 16]", got)
	}
}

func TestConfigsModelWithoutBatching(t *testing.T) {
	base := mlpConfig()
	base.MaxBatchSize = 0
	base.SchedulingChoice = nil
	got, notes := Space{Instances: []int{1, 3}, MaxBatchSizes: []int{1, 8}, QueueDelaysUS: []uint64{0, 100}}.Configs(base)
	if len(got) != 2 || got[0].String() != (Config{Instances: 1}).String() || got[1].String() != (Config{Instances: 3}).String() || got[1].MaxBatchSize != 0 {
		t.Errorf("configs = %+v, want instances 1 and 3 without batching", got)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "does not batch") {
		t.Errorf("notes = %q", notes)
	}
	if s := got[1].String(); s != "no batching, 3 instances" {
		t.Errorf("String() = %q", s)
	}
}

func TestConfigsEmptyDimensionsKeepTheModels(t *testing.T) {
	base := mlpConfig()
	base.GetInstanceGroup()[0].Count = 3
	base.GetDynamicBatching().MaxQueueDelayMicroseconds = 250
	got, _ := Space{MaxBatchSizes: []int{16}}.Configs(base)
	want := Config{MaxBatchSize: 16, DynamicBatching: true, PreferredBatchSize: []int32{16}, MaxQueueDelayUS: 250, Instances: 3}
	if len(got) != 1 || got[0].String() != want.String() {
		t.Errorf("configs = %+v, want %+v", got, want)
	}
}

func TestApply(t *testing.T) {
	base := mlpConfig()
	orig := proto.Clone(base)

	cfg := apply(base, Config{MaxBatchSize: 8, DynamicBatching: true, PreferredBatchSize: []int32{8}, MaxQueueDelayUS: 300, Instances: 3})
	if !proto.Equal(base, orig) {
		t.Fatal("apply changed its base")
	}
	db := cfg.GetDynamicBatching()
	if cfg.GetMaxBatchSize() != 8 || db == nil || db.GetMaxQueueDelayMicroseconds() != 300 ||
		!slices.Equal(db.GetPreferredBatchSize(), []int32{8}) || !db.GetPreserveOrdering() {
		t.Errorf("batching = %d, %v; want 8 with delay 300, preferred [8], preserve_ordering kept", cfg.GetMaxBatchSize(), db)
	}
	if g := cfg.GetInstanceGroup(); len(g) != 1 || g[0].GetCount() != 3 || g[0].GetKind() != inferencepb.ModelInstanceGroup_KIND_CPU {
		t.Errorf("instance groups = %v, want one KIND_CPU group of 3", g)
	}
	if w := cfg.GetModelWarmup(); len(w) != 1 || w[0].GetName() != "one" {
		t.Errorf("warm-up = %v, want the batch-16 sample dropped", w)
	}
	if got := configOf(cfg); got.String() != "max batch 8, delay 300 µs, preferred [8], 3 instances" {
		t.Errorf("configOf(apply(...)) = %s", got)
	}

	off := apply(base, Config{MaxBatchSize: 1, Instances: 1})
	if off.GetDynamicBatching() != nil || off.GetMaxBatchSize() != 1 || len(off.GetModelWarmup()) != 1 {
		t.Errorf("no batching: %v", off)
	}

	// A model without instance groups gets one.
	base.InstanceGroup = nil
	if g := apply(base, Config{MaxBatchSize: 64, Instances: 2}).GetInstanceGroup(); len(g) != 1 || g[0].GetCount() != 2 {
		t.Errorf("instance groups = %v", g)
	}
}

func TestConfigOfRoundTrip(t *testing.T) {
	base := mlpConfig()
	base.InstanceGroup = append(base.InstanceGroup, &inferencepb.ModelInstanceGroup{Count: 2})
	if got := configOf(base); got.Instances != 3 || got.MaxBatchSize != 64 || !got.DynamicBatching {
		t.Errorf("configOf = %+v", got)
	}
	if got := configOf(apply(base, configOf(base))); got.String() != "max batch 64, delay 0 µs, preferred [64], 3 instances" {
		t.Errorf("round trip: %s", got)
	}
}
