package main

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// cacheConfig is the model cache: on-demand loading, a memory budget with
// least-recently-used eviction, idle unload, and the bound on concurrent
// loads.
type cacheConfig struct {
	onDemand    bool
	memory      string // --model-cache-memory as given
	gpuMemory   string
	idleSecs    int
	loadThreads int

	budget int64 // bytes; 0: no budget
	idle   time.Duration
}

func (c *cacheConfig) register(fs *flag.FlagSet) {
	fs.BoolVar(&c.onDemand, "model-load-on-demand", false,
		"load a model of the repository that is not loaded on its first inference request, whatever the protocol (Nereid only)")
	fs.StringVar(&c.memory, "model-cache-memory", "",
		"memory budget of the loaded models, in bytes or as N% of the memory available to the process; "+
			"idle models are evicted, least recently used first, to make room for a load (default: no budget; Nereid only)")
	fs.StringVar(&c.gpuMemory, "model-cache-gpu-memory", "",
		"per-GPU memory budget of the loaded models (not implemented: refused when set; Nereid only)")
	fs.IntVar(&c.idleSecs, "model-idle-unload-secs", 0,
		"unload a model no inference request used for this many seconds; its next request loads it again (0: never; Nereid only)")
	fs.IntVar(&c.loadThreads, "model-load-thread-count", 4, "model versions loading at once")
}

func (c *cacheConfig) finish() error {
	if c.gpuMemory != "" {
		return fmt.Errorf("--model-cache-gpu-memory: GPU memory accounting is not implemented in this build")
	}
	if c.idleSecs < 0 {
		return fmt.Errorf("--model-idle-unload-secs: %d must not be negative", c.idleSecs)
	}
	c.idle = time.Duration(c.idleSecs) * time.Second
	if c.loadThreads <= 0 {
		return fmt.Errorf("--model-load-thread-count: %d must be positive", c.loadThreads)
	}
	b, err := parseMemory(c.memory, memoryAvailable)
	if err != nil {
		return fmt.Errorf("--model-cache-memory: %w", err)
	}
	c.budget = b
	return nil
}

// parseMemory reads a byte count, or "N%" of what available reports.
func parseMemory(s string, available func() int64) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	if pct, ok := strings.CutSuffix(s, "%"); ok {
		f, err := strconv.ParseFloat(pct, 64)
		if err != nil || f <= 0 || f > 100 {
			return 0, fmt.Errorf("'%s' must be a percentage in (0, 100]", s)
		}
		total := available()
		if total <= 0 {
			return 0, fmt.Errorf("'%s': the memory available to the process cannot be read; give a number of bytes", s)
		}
		return int64(float64(total) * f / 100), nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("'%s' must be a positive number of bytes or a percentage", s)
	}
	return n, nil
}
