// Package analyze is Nereid's configuration recommender: it sweeps one
// model's serving configurations (dynamic batching, instance count) and
// client concurrency against a server, measures throughput, latency
// percentiles and memory for each, and recommends the configuration that
// meets a latency budget at the least cost.
package analyze

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/nereid-project/nereid/proto/inferencepb"
)

// Config is one point of a model's configuration space: the settings the
// sweep changes in its config.pbtxt.
type Config struct {
	// MaxBatchSize is max_batch_size; 0 for a model that does not batch.
	MaxBatchSize int `json:"max_batch_size"`
	// DynamicBatching says whether the model has a dynamic_batching
	// section; without one each request runs on its own.
	DynamicBatching bool `json:"dynamic_batching"`
	// PreferredBatchSize is the dynamic batcher's preferred_batch_size:
	// the model's own, capped at MaxBatchSize (auto-complete's default
	// [max_batch_size] becomes [MaxBatchSize]).
	PreferredBatchSize []int32 `json:"preferred_batch_size,omitempty"`
	// MaxQueueDelayUS is max_queue_delay_microseconds.
	MaxQueueDelayUS uint64 `json:"max_queue_delay_microseconds"`
	// Instances is the instance_group count.
	Instances int `json:"instances"`
}

// String is the configuration in a few words, for tables and plots.
func (c Config) String() string {
	var b strings.Builder
	switch {
	case c.MaxBatchSize == 0:
		b.WriteString("no batching")
	case !c.DynamicBatching:
		fmt.Fprintf(&b, "max batch %d, no dynamic batching", c.MaxBatchSize)
	default:
		fmt.Fprintf(&b, "max batch %d, delay %d µs", c.MaxBatchSize, c.MaxQueueDelayUS)
		if len(c.PreferredBatchSize) > 0 {
			fmt.Fprintf(&b, ", preferred %v", c.PreferredBatchSize)
		}
	}
	fmt.Fprintf(&b, ", %d instance", c.Instances)
	if c.Instances != 1 {
		b.WriteString("s")
	}
	return b.String()
}

// Space is the grid a sweep walks: every combination of instance count,
// max batch size and queue delay is one configuration, measured at each
// concurrency level.
type Space struct {
	Instances     []int
	MaxBatchSizes []int
	QueueDelaysUS []uint64
	Concurrency   []int
}

// DefaultSpace is a grid small enough to sweep in a couple of minutes on
// two cores with the default window: instance counts up to cpus (at most
// 4), batching off and on at two sizes, with and without a queue delay,
// and three concurrency levels.
func DefaultSpace(cpus int) Space {
	s := Space{
		MaxBatchSizes: []int{1, 8, 64},
		QueueDelaysUS: []uint64{0, 500},
		Concurrency:   []int{1, 4, 16},
	}
	for n := 1; n <= max(1, min(cpus, 4)); n *= 2 {
		s.Instances = append(s.Instances, n)
	}
	return s
}

// configOf describes a model configuration as a point of the space.
func configOf(cfg *inferencepb.ModelConfig) Config {
	c := Config{MaxBatchSize: int(cfg.GetMaxBatchSize()), Instances: 0}
	for _, g := range cfg.GetInstanceGroup() {
		c.Instances += int(max(g.GetCount(), 1))
	}
	c.Instances = max(c.Instances, 1)
	if db := cfg.GetDynamicBatching(); db != nil {
		c.DynamicBatching = true
		c.PreferredBatchSize = db.GetPreferredBatchSize()
		c.MaxQueueDelayUS = db.GetMaxQueueDelayMicroseconds()
	}
	return c
}

// Configs enumerates the configurations of the space for a model whose
// configuration is base, in sweep order, with notes on what was left
// out. A model that does not batch sweeps instances alone; max batch sizes
// above the model's own are dropped (its inputs may not allow them); a max
// batch size of 1 has no dynamic batcher, so no queue delay; the model's
// preferred batch sizes are capped at each max batch size.
func (s Space) Configs(base *inferencepb.ModelConfig) ([]Config, []string) {
	var notes []string
	instances := positiveSorted(s.Instances)
	if len(instances) == 0 {
		instances = []int{configOf(base).Instances}
	}
	type batching struct {
		size    int
		dynamic bool
		delay   uint64
	}
	var modes []batching
	if mbs := int(base.GetMaxBatchSize()); mbs == 0 {
		modes = []batching{{}}
		notes = append(notes, "the model does not batch (max_batch_size 0): only instances and concurrency are swept")
	} else {
		sizes := positiveSorted(s.MaxBatchSizes)
		var dropped []string
		sizes = slices.DeleteFunc(sizes, func(b int) bool {
			if b > mbs {
				dropped = append(dropped, fmt.Sprint(b))
				return true
			}
			return false
		})
		if len(dropped) > 0 {
			notes = append(notes, fmt.Sprintf("max batch sizes %s are above the model's max_batch_size %d: left out", strings.Join(dropped, ", "), mbs))
		}
		if len(sizes) == 0 {
			sizes = []int{mbs}
		}
		delays := slices.Clone(s.QueueDelaysUS)
		slices.Sort(delays)
		delays = slices.Compact(delays)
		if len(delays) == 0 {
			delays = []uint64{base.GetDynamicBatching().GetMaxQueueDelayMicroseconds()}
		}
		for _, b := range sizes {
			if b == 1 {
				modes = append(modes, batching{size: 1})
				continue
			}
			for _, d := range delays {
				modes = append(modes, batching{size: b, dynamic: true, delay: d})
			}
		}
	}
	var out []Config
	for _, n := range instances {
		for _, m := range modes {
			c := Config{MaxBatchSize: m.size, DynamicBatching: m.dynamic, MaxQueueDelayUS: m.delay, Instances: n}
			if m.dynamic {
				for _, p := range base.GetDynamicBatching().GetPreferredBatchSize() {
					c.PreferredBatchSize = append(c.PreferredBatchSize, min(p, int32(m.size)))
				}
				slices.Sort(c.PreferredBatchSize)
				c.PreferredBatchSize = slices.Compact(c.PreferredBatchSize)
			}
			out = append(out, c)
		}
	}
	return out, notes
}

// apply returns base changed to configuration c. The first instance group
// keeps its kind and devices with c's count; other groups are dropped. A
// warm-up sample larger than the max batch size is dropped, since the
// model would refuse it at load.
func apply(base *inferencepb.ModelConfig, c Config) *inferencepb.ModelConfig {
	cfg, _ := proto.Clone(base).(*inferencepb.ModelConfig)
	if base.GetMaxBatchSize() > 0 {
		cfg.MaxBatchSize = int32(max(c.MaxBatchSize, 1))
	}
	if c.DynamicBatching && cfg.MaxBatchSize > 0 {
		db, _ := proto.Clone(base.GetDynamicBatching()).(*inferencepb.ModelDynamicBatching)
		if db == nil {
			db = &inferencepb.ModelDynamicBatching{}
		}
		db.PreferredBatchSize = slices.Clone(c.PreferredBatchSize)
		db.MaxQueueDelayMicroseconds = c.MaxQueueDelayUS
		cfg.SchedulingChoice = &inferencepb.ModelConfig_DynamicBatching{DynamicBatching: db}
	} else if cfg.GetDynamicBatching() != nil {
		cfg.SchedulingChoice = nil
	}
	g := &inferencepb.ModelInstanceGroup{}
	if gs := base.GetInstanceGroup(); len(gs) > 0 {
		g, _ = proto.Clone(gs[0]).(*inferencepb.ModelInstanceGroup)
	}
	g.Count = int32(max(c.Instances, 1))
	cfg.InstanceGroup = []*inferencepb.ModelInstanceGroup{g}
	cfg.ModelWarmup = slices.DeleteFunc(cfg.ModelWarmup, func(w *inferencepb.ModelWarmup) bool {
		return int(w.GetBatchSize()) > max(int(cfg.MaxBatchSize), 1)
	})
	return cfg
}

// positiveSorted returns the positive values of xs, sorted, without
// repeats.
func positiveSorted(xs []int) []int {
	out := slices.DeleteFunc(slices.Clone(xs), func(x int) bool { return x <= 0 })
	slices.Sort(out)
	return slices.Compact(out)
}

// boolCompare orders false before true.
func boolCompare(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	default:
		return 1
	}
}
