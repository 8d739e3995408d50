package server

import (
	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/ratelimit"
	"github.com/nereid-project/nereid/repository"
	"github.com/nereid-project/nereid/scheduler"
)

// schedulerDeps registers a version's instances with the rate limiter,
// takes its translated sequence_batching (seq) and attaches the response
// cache. On success lm.release undoes the registration when the version
// unloads.
func (l *Loader) schedulerDeps(lm *loadedModel, spec repository.VersionSpec, seq scheduler.SequenceOptions, logger zerolog.Logger) (schedulerDeps, error) {
	deps := schedulerDeps{sequence: seq}
	cfg := spec.Config
	if cfg.GetResponseCache().GetEnable() {
		if l.opts.Cache == nil {
			logger.Warn().Msg("response_cache is enabled in the model configuration but the server has no cache: start it with --cache-config local,size=<bytes>")
		} else {
			lm.cache = l.opts.Cache
		}
	}
	if rl := l.opts.RateLimiter; rl.Enabled() {
		group, err := rl.Register(rateLimiterConfigs(cfg))
		if err != nil {
			return deps, err
		}
		deps.gate = group
		lm.release = func() { rl.Unregister(group) }
	}
	return deps, nil
}

// rateLimiterConfigs describes the instances LoadVersion builds, in the
// same order, to the rate limiter.
func rateLimiterConfigs(cfg *inferencepb.ModelConfig) []ratelimit.InstanceConfig {
	var out []ratelimit.InstanceConfig
	for _, g := range cfg.GetInstanceGroup() {
		rl := g.GetRateLimiter()
		var needs []ratelimit.Need
		for _, r := range rl.GetResources() {
			needs = append(needs, ratelimit.Need{Name: r.GetName(), Global: r.GetGlobal(), Count: uint64(r.GetCount())})
		}
		devices := g.GetGpus()
		for i := range max(g.GetCount(), 1) {
			ic := ratelimit.InstanceConfig{Name: g.GetName(), Priority: rl.GetPriority(), Needs: needs}
			if len(devices) > 0 {
				ic.Device = int(devices[int(i)%len(devices)])
			}
			out = append(out, ic)
		}
	}
	return out
}

var _ scheduler.Gate = ratelimit.Group(nil)
