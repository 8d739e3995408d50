package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// gpuReading is one poll of one GPU.
type gpuReading struct {
	utilization       float64 // 0.0 - 1.0
	memTotal, memUsed uint64  // bytes
	power, powerLimit float64 // watts
	energy            uint64  // millijoules since the driver loaded
}

// gpuSource reads the GPUs; NVML in production, a fake in tests.
type gpuSource interface {
	// uuids lists the GPUs, in device order.
	uuids() []string
	read(device int) (gpuReading, error)
	close()
}

// gpuMetrics holds Triton's GPU gauges, labelled with gpu_uuid.
type gpuMetrics struct {
	src     gpuSource
	devices []string

	util, memTotal, memUsed, power, powerLimit *prometheus.GaugeVec
	energy                                     *prometheus.CounterVec
	lastEnergy                                 []uint64 // guarded by the poller's single goroutine
}

func newGPUMetrics(reg prometheus.Registerer, src gpuSource) (*gpuMetrics, error) {
	label := []string{"gpu_uuid"}
	g := &gpuMetrics{
		src:        src,
		devices:    src.uuids(),
		util:       prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "nv_gpu_utilization", Help: "GPU utilization rate [0.0 - 1.0)"}, label),
		memTotal:   prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "nv_gpu_memory_total_bytes", Help: "GPU total memory, in bytes"}, label),
		memUsed:    prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "nv_gpu_memory_used_bytes", Help: "GPU used memory, in bytes"}, label),
		power:      prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "nv_gpu_power_usage", Help: "GPU power usage in watts"}, label),
		powerLimit: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "nv_gpu_power_limit", Help: "GPU power management limit in watts"}, label),
		energy:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nv_energy_consumption", Help: "GPU energy consumption in joules since the Triton Server started"}, label),
	}
	g.lastEnergy = make([]uint64, len(g.devices))
	for _, c := range []prometheus.Collector{g.util, g.memTotal, g.memUsed, g.power, g.powerLimit, g.energy} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, uuid := range g.devices {
		g.energy.WithLabelValues(uuid) // present from the start, at 0
	}
	return g, nil
}

func (g *gpuMetrics) poll(log zerolog.Logger) {
	for i, uuid := range g.devices {
		r, err := g.src.read(i)
		if err != nil {
			log.Warn().Err(err).Str("gpu_uuid", uuid).Msg("unable to read GPU metrics")
			continue
		}
		g.util.WithLabelValues(uuid).Set(r.utilization)
		g.memTotal.WithLabelValues(uuid).Set(float64(r.memTotal))
		g.memUsed.WithLabelValues(uuid).Set(float64(r.memUsed))
		g.power.WithLabelValues(uuid).Set(r.power)
		g.powerLimit.WithLabelValues(uuid).Set(r.powerLimit)
		if g.lastEnergy[i] != 0 && r.energy > g.lastEnergy[i] {
			g.energy.WithLabelValues(uuid).Add(float64(r.energy-g.lastEnergy[i]) / 1000)
		}
		g.lastEnergy[i] = r.energy
	}
}
