package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/ratelimit"
	"github.com/nereid-project/nereid/repository"
	"github.com/nereid-project/nereid/server"
	"github.com/nereid-project/nereid/sharedmem/cudadriver"
	"github.com/nereid-project/nereid/traffic"
)

// inProcess is the server core built from the flags, and what it owns:
// the repository and the traffic router. nereid serves it on its
// listeners; subcommands that run models without a network hop (batch,
// analyze) call it directly.
type inProcess struct {
	models *repository.Manager
	router *traffic.Router
	core   *server.Server
}

// buildCore builds the repository, the router and the core, with the late
// Inferer bound; the backends must be set up already. Nothing is loaded
// until models.Start.
func buildCore(c *config, log zerolog.Logger, obs *observability) (*inProcess, error) {
	// Models that call the server (ensembles, BLS) get an Inferer bound
	// once the server exists, after the repository.
	inferer := new(backends.LateInferer)
	loader := server.NewLoader(server.LoaderOptions{
		Inferer:       inferer,
		BackendConfig: c.backendConfig, Logger: log, Metrics: obs.metricsFactory(),
		RateLimiter: ratelimit.New(c.sched.rateLimit), Cache: c.sched.newCache(),
	})
	models, err := repository.New(repository.Options{
		Paths:           c.repositories,
		Mode:            c.controlMode,
		StartupModels:   c.loadModels,
		PollInterval:    c.pollInterval,
		AutoComplete:    c.autoComplete(),
		ModelConfigName: c.modelConfigName,
		Loader:          loader,
		Logger:          log,
		LoadThreads:     c.cache.loadThreads,
		LoadRetries:     c.loadRetries,
		OnDemand:        c.cache.onDemand,
		MemoryBudget:    c.cache.budget,
		IdleUnload:      c.cache.idle,
		CacheMetrics:    obs.cacheMetrics(),
		CloudCacheDir:   c.cloudMountDir,
		GPUs:            func() []int32 { return machineGPUs(log) },
	})
	if err != nil {
		return nil, fmt.Errorf("cannot open the model repository: %w", err)
	}
	router, err := c.traffic.newRouter(models, obs.registerer(), log)
	if err != nil {
		return nil, fmt.Errorf("cannot read the traffic routes: %w", err)
	}
	core := server.New(models, server.Options{
		Traffic:         router,
		ID:              c.id,
		Version:         version,
		StrictReadiness: c.strictReadiness,
		Logger:          log,
		AllowClientShm:  c.allowClientShm,
		MaxShmRegions:   c.maxShmRegions,
	})
	inferer.Bind(core)
	return &inProcess{models: models, router: router, core: core}, nil
}

// closeModels unloads every model, waiting up to timeout.
func (p *inProcess) closeModels(timeout time.Duration, log zerolog.Logger) {
	if p.router != nil {
		p.router.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := p.models.Close(ctx); err != nil {
		log.Warn().Err(err).Msg("unloading models")
	}
}

// openInProcess is the whole set-up of nereid without its listeners, for
// a subcommand: the server's flags (args), logging, metrics registry,
// backends, the core, and the start-up loads. close undoes it all.
func openInProcess(ctx context.Context, args []string, stderr io.Writer) (_ *inProcess, _ *config, _ zerolog.Logger, closeAll func(), err error) {
	var undo []func()
	// undoAll, not the named result, which each failing return sets to
	// nil before the deferred call runs.
	undoAll := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	defer func() {
		if err != nil {
			undoAll()
		}
	}()
	c, err := parseFlags(args, stderr)
	if err != nil {
		return nil, nil, zerolog.Nop(), nil, err
	}
	logCtl, log, err := newLogger(c, stderr)
	if err != nil {
		return nil, nil, zerolog.Nop(), nil, err
	}
	undo = append(undo, func() { logCtl.Close() })
	obs, err := newObservability(c, log)
	if err != nil {
		return nil, nil, log, nil, err
	}
	undo = append(undo, func() { _ = obs.close(context.Background()) })
	if err := setupBackends(c, log); err != nil {
		return nil, nil, log, nil, err
	}
	if err := setupPython(c, log, obs.registerer()); err != nil {
		return nil, nil, log, nil, err
	}
	undo = append(undo, func() { pythonBackend.Close() })
	p, err := buildCore(c, log, obs)
	if err != nil {
		return nil, nil, log, nil, err
	}
	undo = append(undo, func() { p.closeModels(c.exitTimeout, log) })
	if err := p.models.Start(ctx); err != nil {
		err = errors.New(strings.TrimSpace("failed to load all models: " + err.Error()))
		if c.exitOnError {
			return nil, nil, log, nil, err
		}
		log.Error().Msg(err.Error())
	}
	return p, c, log, undoAll, nil
}

// machineGPUs returns the ordinals of the CUDA devices the driver sees,
// which KIND_GPU instance groups are checked against; none without a
// driver. The repository asks once, at the first KIND_GPU group.
func machineGPUs(log zerolog.Logger) []int32 {
	n, err := cudadriver.Devices()
	if err != nil {
		log.Info().Err(err).Msg("no GPU for KIND_GPU instance groups")
		return nil
	}
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32(i)
	}
	log.Info().Int("gpus", n).Str("driver", cudadriver.Library()).Msg("GPUs for KIND_GPU instance groups")
	return ids
}
