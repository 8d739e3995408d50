package main

import (
	"flag"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/nereid-project/nereid/metrics"
)

// memConfig bounds the memory request payloads take: the largest gRPC
// message, and the bytes of request payload held at once across both
// front ends (--http-max-input-size caps one HTTP body).
type memConfig struct {
	grpcMaxMessageSize int
	payloadBudget      int64 // -1: derived from the memory available
	memoryAvailable    int64 // what the derived budget came from; 0 when unknown
}

// budgetShare is the part of the process's memory the derived payload
// budget takes. A payload costs up to about twice its size while it is
// decoded (the front end's receive buffers and the copy it decodes from),
// so a full budget leaves half the memory to models and the rest.
const budgetShare = 4

func (c *memConfig) register(fs *flag.FlagSet) {
	fs.IntVar(&c.grpcMaxMessageSize, "grpc-max-message-size", math.MaxInt32, "largest gRPC message received or sent, in bytes (Triton's fixed limit is the default; Nereid only)")
	fs.Int64Var(&c.payloadBudget, "payload-budget-bytes", -1, "bytes of request payload held at once across HTTP and gRPC; a request that does not fit gets 503 / UNAVAILABLE (default: a quarter of the memory available to the process; 0: no budget; Nereid only)")
}

func (c *memConfig) finish() error {
	if c.grpcMaxMessageSize <= 0 {
		return fmt.Errorf("--grpc-max-message-size: %d must be positive", c.grpcMaxMessageSize)
	}
	if c.payloadBudget < -1 {
		return fmt.Errorf("--payload-budget-bytes: %d must not be negative", c.payloadBudget)
	}
	if c.payloadBudget == -1 {
		c.memoryAvailable = memoryAvailable()
		c.payloadBudget = c.memoryAvailable / budgetShare // 0, no budget, when unknown
	}
	return nil
}

// memoryAvailable is the process's memory limit: its cgroup's (v2
// memory.max, v1 memory.limit_in_bytes) when one is set, else the machine's
// MemTotal; 0 when neither can be read.
func memoryAvailable() int64 {
	total := memTotal()
	for _, p := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err == nil && v > 0 && (total == 0 || v < total) {
			return v // "max" or a v1 "no limit" (huge) leave MemTotal
		}
	}
	return total
}

func memTotal() int64 {
	total, err := metrics.MemTotal("/proc")
	if err != nil || total > math.MaxInt64 {
		return 0
	}
	return int64(total)
}
