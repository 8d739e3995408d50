package main

import (
	"flag"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/repository"
	"github.com/nereid-project/nereid/traffic"
)

// trafficConfig is --traffic-config: the routing file of canary, A/B,
// blue/green and shadow splits.
type trafficConfig struct {
	path string
}

func (c *trafficConfig) register(fs *flag.FlagSet) {
	fs.StringVar(&c.path, "traffic-config", "",
		"JSON file of traffic routes (weighted variants, sticky routing, shadow mirroring, automatic rollback), re-read when it changes (Nereid only)")
}

// newRouter reads the routing file against the repository; nil when none
// is configured.
func (c *trafficConfig) newRouter(models *repository.Manager, reg prometheus.Registerer, log zerolog.Logger) (*traffic.Router, error) {
	if c.path == "" {
		return nil, nil
	}
	var m *traffic.Metrics
	if reg != nil {
		var err error
		if m, err = traffic.NewMetrics(reg); err != nil {
			return nil, err
		}
	}
	return traffic.New(c.path, traffic.Options{Check: models.Exists, Logger: log, Metrics: m})
}
