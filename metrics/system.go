package metrics

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// PollerOptions configures the CPU and GPU gauges refreshed at an interval.
type PollerOptions struct {
	// Interval is --metrics-interval-ms; default 2 s.
	Interval time.Duration
	// CPU enables nv_cpu_utilization and the CPU memory gauges
	// (--allow-cpu-metrics), read from ProcRoot.
	CPU bool
	// GPU enables the GPU gauges (--allow-gpu-metrics) when a GPU and its
	// driver are found; without them the GPU metrics are simply absent.
	GPU bool
	// ProcRoot is where /proc is mounted; default "/proc". A test seam.
	ProcRoot string
	Logger   zerolog.Logger
	// openGPUs finds the GPUs; default NVML through go-nvml. A test seam.
	openGPUs func() (gpuSource, error)
}

// Poller refreshes the CPU and GPU gauges. Its goroutine is the one Run
// runs on: the caller owns it and stops it by cancelling Run's context.
type Poller struct {
	opts PollerOptions

	cpuUtil, memTotal, memUsed prometheus.Gauge
	lastCPU                    cpuTimes
	haveCPU                    bool

	gpus *gpuMetrics
}

// NewPoller registers the gauges the options enable on reg and takes a
// first reading, so that a scrape right after start-up already sees
// values. Missing GPUs or a missing driver are logged, not errors.
func NewPoller(reg prometheus.Registerer, opts PollerOptions) (*Poller, error) {
	if opts.Interval <= 0 {
		opts.Interval = 2 * time.Second
	}
	if opts.ProcRoot == "" {
		opts.ProcRoot = "/proc"
	}
	if opts.openGPUs == nil {
		opts.openGPUs = openNVML
	}
	p := &Poller{opts: opts}
	if opts.CPU {
		p.cpuUtil = prometheus.NewGauge(prometheus.GaugeOpts{Name: "nv_cpu_utilization", Help: "CPU utilization rate [0.0 - 1.0]"})
		p.memTotal = prometheus.NewGauge(prometheus.GaugeOpts{Name: "nv_cpu_memory_total_bytes", Help: "CPU total memory (RAM), in bytes"})
		p.memUsed = prometheus.NewGauge(prometheus.GaugeOpts{Name: "nv_cpu_memory_used_bytes", Help: "CPU used memory (RAM), in bytes"})
		for _, c := range []prometheus.Collector{p.cpuUtil, p.memTotal, p.memUsed} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
		if t, err := readCPUTimes(opts.ProcRoot); err != nil {
			opts.Logger.Warn().Err(err).Msg("CPU utilization may not be available")
		} else {
			p.lastCPU, p.haveCPU = t, true
		}
	}
	if opts.GPU {
		src, err := opts.openGPUs()
		switch {
		case err != nil:
			opts.Logger.Info().Err(err).Msg("GPU metrics will not be available")
		default:
			g, err := newGPUMetrics(reg, src)
			if err != nil {
				src.close()
				return nil, err
			}
			p.gpus = g
			opts.Logger.Info().Int("gpus", len(g.devices)).Msg("collecting GPU metrics")
		}
	}
	// The first utilization needs a second reading one interval later;
	// memory and GPUs are read now.
	if p.memTotal != nil {
		p.pollMemory()
	}
	if p.gpus != nil {
		p.gpus.poll(p.opts.Logger)
	}
	return p, nil
}

// Run refreshes the gauges every interval until ctx ends, then releases
// the GPU driver. It is called once.
func (p *Poller) Run(ctx context.Context) {
	defer func() {
		if p.gpus != nil {
			p.gpus.src.close()
		}
	}()
	if p.cpuUtil == nil && p.gpus == nil {
		return
	}
	t := time.NewTicker(p.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.poll()
		}
	}
}

func (p *Poller) poll() {
	if p.cpuUtil != nil {
		p.pollCPU()
	}
	if p.gpus != nil {
		p.gpus.poll(p.opts.Logger)
	}
}

func (p *Poller) pollCPU() {
	if t, err := readCPUTimes(p.opts.ProcRoot); err == nil {
		if p.haveCPU {
			p.cpuUtil.Set(cpuUtilization(t, p.lastCPU))
		}
		p.lastCPU, p.haveCPU = t, true
	} else {
		p.cpuUtil.Set(0)
	}
	p.pollMemory()
}

func (p *Poller) pollMemory() {
	total, used, err := readMemInfo(p.opts.ProcRoot)
	if err != nil {
		total, used = 0, 0
	}
	p.memTotal.Set(float64(total))
	p.memUsed.Set(float64(used))
}

// cpuTimes are the aggregate jiffies of /proc/stat's "cpu" line.
type cpuTimes struct{ user, nice, system, idle, iowait, irq, softirq, steal uint64 }

func readCPUTimes(procRoot string) (cpuTimes, error) {
	var t cpuTimes
	f, err := os.Open(filepath.Join(procRoot, "stat"))
	if err != nil {
		return t, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return t, errors.New("empty /proc/stat")
	}
	fields := strings.Fields(sc.Text())
	if len(fields) < 9 || fields[0] != "cpu" {
		return t, errors.New("failed to find aggregate CPU info in /proc/stat")
	}
	vals := make([]uint64, 8)
	for i := range vals {
		if vals[i], err = strconv.ParseUint(fields[i+1], 10, 64); err != nil {
			return t, fmt.Errorf("failed to parse aggregate CPU info in /proc/stat: %w", err)
		}
	}
	return cpuTimes{vals[0], vals[1], vals[2], vals[3], vals[4], vals[5], vals[6], vals[7]}, nil
}

// cpuUtilization is the busy share of the jiffies between two readings, as
// Triton computes it: idle and iowait are idle, the rest busy.
func cpuUtilization(now, before cpuTimes) float64 {
	sub := func(a, b uint64) uint64 {
		if a > b {
			return a - b
		}
		return 0
	}
	busy := sub(now.user, before.user) + sub(now.nice, before.nice) + sub(now.system, before.system) +
		sub(now.irq, before.irq) + sub(now.softirq, before.softirq) + sub(now.steal, before.steal)
	idle := sub(now.idle, before.idle) + sub(now.iowait, before.iowait)
	if busy+idle == 0 {
		return 0
	}
	return float64(busy) / float64(busy+idle)
}

// MemTotal is the machine's memory in bytes, from procRoot/meminfo
// (procRoot is normally /proc).
func MemTotal(procRoot string) (uint64, error) {
	total, _, err := readMemInfo(procRoot)
	return total, err
}

// readMemInfo returns MemTotal and MemTotal - MemAvailable in bytes.
func readMemInfo(procRoot string) (total, used uint64, err error) {
	f, err := os.Open(filepath.Join(procRoot, "meminfo"))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var available uint64
	var haveTotal, haveAvail bool
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		v, err := strconv.ParseUint(fields[1], 10, 64)
		if err != nil {
			continue
		}
		switch fields[0] {
		case "MemTotal:":
			total, haveTotal = v*1024, true
		case "MemAvailable:":
			available, haveAvail = v*1024, true
		}
	}
	if !haveTotal || !haveAvail {
		return 0, 0, errors.New("failed to find desired values in /proc/meminfo")
	}
	if available > total {
		return 0, 0, errors.New("available bytes shouldn't be greater than total bytes")
	}
	return total, total - available, nil
}
