package repository

import (
	"slices"
	"strconv"

	"github.com/nereid-project/nereid/proto/inferencepb"
)

// normalizeConfig fills the defaults Triton's core adds before validation
// (NormalizeModelConfig): version policy, preferred batch sizes, the
// sequence idle time and pinned memory.
func normalizeConfig(cfg *inferencepb.ModelConfig) {
	if cfg.VersionPolicy == nil || cfg.VersionPolicy.PolicyChoice == nil {
		cfg.VersionPolicy = &inferencepb.ModelVersionPolicy{
			PolicyChoice: &inferencepb.ModelVersionPolicy_Latest_{
				Latest: &inferencepb.ModelVersionPolicy_Latest{NumVersions: 1},
			},
		}
	}
	if db := cfg.GetDynamicBatching(); db != nil {
		if len(db.PreferredBatchSize) == 0 && cfg.MaxBatchSize > 0 {
			db.PreferredBatchSize = []int32{cfg.MaxBatchSize}
		}
	}
	if sb := cfg.GetSequenceBatching(); sb != nil {
		if sb.MaxSequenceIdleMicroseconds == 0 {
			sb.MaxSequenceIdleMicroseconds = defaultSequenceIdleMicroseconds
		}
		if o := sb.GetOldest(); o != nil && len(o.PreferredBatchSize) == 0 && cfg.MaxBatchSize > 0 {
			o.PreferredBatchSize = []int32{cfg.MaxBatchSize}
		}
	}
	if cfg.GetEnsembleScheduling() == nil {
		if cfg.Optimization == nil {
			cfg.Optimization = &inferencepb.ModelOptimizationPolicy{}
		}
		if cfg.Optimization.InputPinnedMemory == nil {
			cfg.Optimization.InputPinnedMemory = &inferencepb.ModelOptimizationPolicy_PinnedMemoryBuffer{Enable: true}
		}
		if cfg.Optimization.OutputPinnedMemory == nil {
			cfg.Optimization.OutputPinnedMemory = &inferencepb.ModelOptimizationPolicy_PinnedMemoryBuffer{Enable: true}
		}
	}
}

// normalizeInstanceGroups gives a non-ensemble model at least one instance
// group and names, kinds and counts its groups as Triton does
// (NormalizeInstanceGroup). KIND_AUTO resolves to KIND_CPU (Nereid's
// backends run on the CPU unless a group asks for a GPU), and a KIND_GPU
// group that names no GPU gets every GPU the machine has.
func normalizeInstanceGroups(cfg *inferencepb.ModelConfig, gpus func() []int32) {
	if cfg.GetEnsembleScheduling() != nil {
		return
	}
	if len(cfg.InstanceGroup) == 0 {
		cfg.InstanceGroup = []*inferencepb.ModelInstanceGroup{{Name: cfg.Name}}
	}
	for i, g := range cfg.InstanceGroup {
		if g.Name == "" {
			g.Name = cfg.Name + "_" + strconv.Itoa(i)
		}
		if g.Kind == inferencepb.ModelInstanceGroup_KIND_AUTO {
			g.Kind = inferencepb.ModelInstanceGroup_KIND_CPU
		}
		if g.Kind == inferencepb.ModelInstanceGroup_KIND_GPU && len(g.Gpus) == 0 {
			g.Gpus = slices.Clone(gpus())
		}
		if g.Count < 1 {
			g.Count = 1
			// Triton opts these backends into two CPU instances by default.
			if g.Kind == inferencepb.ModelInstanceGroup_KIND_CPU &&
				(cfg.Backend == backendTensorFlow || cfg.Backend == backendONNXRuntime) {
				g.Count = 2
			}
		}
	}
}
