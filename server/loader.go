package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/cache"
	"github.com/nereid-project/nereid/ensemble"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/ratelimit"
	"github.com/nereid-project/nereid/repository"
	"github.com/nereid-project/nereid/scheduler"
)

// LoaderOptions configures how model versions are brought up.
type LoaderOptions struct {
	// BackendConfig holds --backend-config values by backend name.
	BackendConfig map[string]map[string]string
	Logger        zerolog.Logger
	// Metrics, when set, creates the Prometheus reporter of each version
	// that loads; the version closes it when it unloads.
	Metrics MetricsFactory
	// RateLimiter admits executions (--rate-limit); nil or off: none.
	RateLimiter *ratelimit.Limiter
	// Cache is the response cache (--cache-config) that models with
	// response_cache enabled use; nil: none.
	Cache *cache.Local
	// Inferer is how loaded models reach the server (ensembles, a model's
	// own requests): the server is built after the repository, so this is
	// bound late. Nil: the loader makes an unbound one (Inferer returns it).
	Inferer *backends.LateInferer
}

// Loader builds the servable of a model version from the backend registry.
// It implements repository.Loader.
type Loader struct {
	opts    LoaderOptions
	inferer *backends.LateInferer
}

var _ repository.Loader = (*Loader)(nil)

// NewLoader returns a Loader with opts.
func NewLoader(opts LoaderOptions) *Loader {
	l := &Loader{opts: opts, inferer: opts.Inferer}
	if l.inferer == nil {
		l.inferer = new(backends.LateInferer)
	}
	return l
}

// Inferer is the late-bound Inferer the loaded models get: bind the server
// to it once it is built.
func (l *Loader) Inferer() *backends.LateInferer { return l.inferer }

func (l *Loader) backendFor(cfg *inferencepb.ModelConfig) (string, backends.Backend, error) {
	name := backends.BackendName(cfg)
	if name == "" {
		if cfg.GetPlatform() != "" {
			return "", nil, inference.Unsupported("unknown platform '%s': Nereid serves the backends %v", cfg.GetPlatform(), backends.Names())
		}
		return "", nil, inference.InvalidArg("must specify 'platform' or 'backend' for model '%s'", cfg.GetName())
	}
	b, ok := backends.Lookup(name)
	if !ok {
		return "", nil, inference.Unsupported("unable to find backend '%s': Nereid serves the backends %v", name, backends.Names())
	}
	return name, b, nil
}

// Complete resolves the backend a configuration names and lets it fill in
// or check the configuration.
func (l *Loader) Complete(ctx context.Context, modelDir string, cfg *inferencepb.ModelConfig, autoComplete bool) error {
	if isEnsemble(cfg) {
		return nil // no backend: its steps are checked when it loads
	}
	name, b, err := l.backendFor(cfg)
	if err != nil {
		return err
	}
	if cfg.GetBackend() == "" {
		cfg.Backend = name
	}
	if c, ok := b.(backends.Completer); ok {
		return c.Complete(ctx, modelDir, cfg, autoComplete)
	}
	return nil
}

// LoadVersion loads the backend model, builds every instance of every
// instance group, warms each one up with the model_warmup samples (whatever
// its backend: the version is READY only once every instance is warm) and
// puts a scheduler in front of them.
func (l *Loader) LoadVersion(ctx context.Context, spec repository.VersionSpec) (_ repository.Servable, err error) {
	loadStart := time.Now()
	if isEnsemble(spec.Config) {
		return l.loadEnsemble(ctx, spec, loadStart)
	}
	name, b, err := l.backendFor(spec.Config)
	if err != nil {
		return nil, err
	}
	logger := l.opts.Logger.With().Str("model", spec.Name).Int64("version", spec.Version).Logger()
	var seq scheduler.SequenceOptions
	if spec.Config.GetSequenceBatching() != nil {
		if seq, err = sequenceOptions(spec.Config, spec.ModelDir, logger); err != nil {
			return nil, err
		}
	}
	// The samples are built before the backend loads anything, so that a
	// bad one fails the load at once.
	samples, err := warmupSamples(spec.Config, spec.ModelDir, seq)
	if err != nil {
		return nil, err
	}
	m, err := b.Load(ctx, backends.ModelSpec{
		Name:          spec.Name,
		Version:       spec.Version,
		ModelDir:      spec.ModelDir,
		VersionDir:    spec.VersionDir,
		Config:        spec.Config,
		BackendConfig: l.opts.BackendConfig[name],
		Logger:        logger,
		Inferer:       l.inferer,
	})
	if err != nil {
		return nil, err
	}
	lm := newLoadedModel(spec.Name, spec.Version, spec.Config, m)
	defer func() {
		if err != nil {
			err = errors.Join(err, lm.closeBackend())
		}
	}()
	if lm.labels, err = loadLabels(spec.ModelDir, spec.Config); err != nil {
		return nil, err
	}
	if err := lm.checkWarmup(samples); err != nil {
		return nil, err
	}
	for _, g := range spec.Config.GetInstanceGroup() {
		count := max(g.GetCount(), 1)
		devices := g.GetGpus()
		for i := range count {
			is := backends.InstanceSpec{Name: fmt.Sprintf("%s_%d", g.GetName(), i), Kind: g.GetKind()}
			if len(devices) > 0 {
				is.DeviceID = devices[int(i)%len(devices)]
			}
			inst, err := m.NewInstance(ctx, is)
			if err != nil {
				return nil, fmt.Errorf("instance %s: %w", is.Name, err)
			}
			lm.instances = append(lm.instances, inst) // closed by the deferred closeBackend on failure
			if err := warmUp(ctx, logger, spec.Name, is.Name, samples, inst); err != nil {
				return nil, err
			}
		}
	}
	lm.unaryOnly = !lm.decoupled
	for _, inst := range lm.instances {
		if _, ok := backends.UnwrapUnary(inst); !ok {
			lm.unaryOnly = false
		}
	}
	if len(lm.instances) == 0 {
		return nil, inference.InvalidArg("model '%s' has no instances: instance_group count must be at least 1", spec.Name)
	}
	deps, err := l.schedulerDeps(lm, spec, seq, logger)
	if err != nil {
		return nil, err
	}
	l.attachMetrics(lm, spec, loadStart)
	lm.sched = newScheduler(spec.Config, lm.instances, lm.stats, deps)
	logger.Info().Int("instances", len(lm.instances)).Str("backend", name).Msg("model version loaded")
	return lm, nil
}

// attachMetrics gives a loaded version its Prometheus reporter, when
// metrics are on, and reports how long it took to load.
func (l *Loader) attachMetrics(lm *loadedModel, spec repository.VersionSpec, loadStart time.Time) {
	if l.opts.Metrics != nil {
		lm.stats.metrics = l.opts.Metrics(spec.Name, spec.Version, lm.cfg)
		lm.stats.metrics.LoadDuration(time.Since(loadStart))
	}
}

// isEnsemble reports whether cfg is an ensemble, which has no backend:
// its scheduler runs its steps on other models.
func isEnsemble(cfg *inferencepb.ModelConfig) bool {
	return cfg.GetPlatform() == ensemblePlatform
}

const ensemblePlatform = "ensemble"

// loadEnsemble checks an ensemble against its composing models, which the
// repository has loaded first, and puts an executor in front of its plan.
func (l *Loader) loadEnsemble(ctx context.Context, spec repository.VersionSpec, loadStart time.Time) (repository.Servable, error) {
	if len(spec.Config.GetModelWarmup()) > 0 {
		// The repository's configuration check refuses it first; a
		// configuration that reaches the loader another way is refused too.
		return nil, inference.InvalidArg("model_warmup can not be specified for ensemble '%s': an ensemble's composing models are warmed up, each by its own model_warmup", spec.Name)
	}
	plan, err := ensemble.Build(ctx, spec.Config, spec.Version, l.inferer)
	if err != nil {
		return nil, err
	}
	cfg := spec.Config
	if plan.Decoupled() && !cfg.GetModelTransactionPolicy().GetDecoupled() {
		// A decoupled step makes the ensemble answer 0..N times: its
		// configuration says so, to clients and to ensembles that use it.
		cfg = proto.CloneOf(cfg)
		cfg.ModelTransactionPolicy = &inferencepb.ModelTransactionPolicy{Decoupled: true}
	}
	lm := newLoadedModel(spec.Name, spec.Version, cfg, nil)
	// Not decoupled: the executor sends the one response before Infer
	// returns, which lets the core reuse the request's sink.
	lm.unaryOnly = !plan.Decoupled()
	l.attachMetrics(lm, spec, loadStart)
	lm.sched = ensemble.NewExecutor(plan, l.inferer)
	l.opts.Logger.Info().Str("model", spec.Name).Int64("version", spec.Version).
		Int("steps", len(spec.Config.GetEnsembleScheduling().GetStep())).Bool("decoupled", lm.decoupled).Msg("ensemble loaded")
	return lm, nil
}
