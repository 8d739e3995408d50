package repository

import (
	"context"
	"errors"
	"maps"
	"slices"
	"time"

	"github.com/nereid-project/nereid/inference"
)

// Run is the Manager's background work, until ctx is done or the Manager
// is closed: in poll mode it polls the repositories every PollInterval,
// and with IdleUnload it unloads the models that fall idle, on one timer
// armed for the next one due.
func (m *Manager) Run(ctx context.Context) {
	var tick <-chan time.Time
	if m.opts.Mode == ModePoll && m.opts.PollInterval > 0 {
		t := time.NewTicker(m.opts.PollInterval)
		defer t.Stop()
		tick = t.C
	}
	idle, arm := m.idleTimer()
	arm()
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.done:
			return
		case <-tick:
			if err := m.Poll(ctx); err != nil {
				m.log.Error().Err(err).Msg("model repository poll")
			}
		case now := <-idle:
			m.unloadIdle(now)
			arm()
		case <-m.kick:
			arm()
		}
	}
}

// Poll rescans the repositories once (poll mode only): models that
// appeared are loaded, models whose configuration or files changed are
// reloaded, and models that disappeared are unloaded. A model whose new
// configuration fails keeps serving its old versions. The error joins the
// failures of this poll.
func (m *Manager) Poll(ctx context.Context) error {
	if m.opts.Mode != ModePoll {
		return inference.Unavailable(msgPollOnly)
	}
	m.pollMu.Lock()
	defer m.pollMu.Unlock()

	fetchErr := m.remotes.fetch(ctx)
	scanned, scanErr := m.sources.scan(true)
	scanErr = errors.Join(fetchErr, scanErr) // a copy that failed to sync unloads nothing
	var (
		reqs []loadRequest
		errs = []error{scanErr}
	)
	for _, name := range slices.Sorted(maps.Keys(scanned)) {
		rm := scanned[name]
		if rm.duplicate {
			if err := m.markDuplicate(ctx, name); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		fp := fingerprint(rm.dir, configPath(rm.dir, m.opts.ModelConfigName))
		m.mu.Lock()
		md := m.models[name]
		// A model the cache took out is left to its next request, which
		// loads the files as they are then.
		unchanged := md != nil && (md.cacheOut || md.requested && md.attemptFP == fp)
		m.mu.Unlock()
		if !unchanged {
			reqs = append(reqs, loadRequest{name: name})
		}
	}

	// A repository that could not be read says nothing about its models:
	// unload only when every repository was listed.
	if scanErr == nil {
		m.mu.Lock()
		var gone []*model
		for name, md := range m.models {
			if _, ok := scanned[name]; !ok && md.requested {
				gone = append(gone, md)
			}
		}
		m.mu.Unlock()
		for _, md := range gone {
			if err := md.lock(ctx); err != nil {
				errs = append(errs, err)
				continue
			}
			m.mu.Lock()
			m.unloadLocked(md)
			m.mu.Unlock()
			md.unlock()
			m.log.Info().Str("model", md.name).Msg("model removed from the repository: unloading")
		}
	}

	errs = append(errs, errsInOrder(m.loadBatch(ctx, reqs, false))...)
	return errors.Join(errs...)
}

// markDuplicate takes a model that now appears in more than one
// repository out of service, as Triton does.
func (m *Manager) markDuplicate(ctx context.Context, name string) error {
	md := m.modelFor(name)
	if err := md.lock(ctx); err != nil {
		return err
	}
	defer md.unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	if md.requested && md.failure == reasonDuplicate && md.attemptFP == "" {
		return nil // already reported
	}
	m.unloadLocked(md)
	md.requested, md.failure = true, reasonDuplicate
	m.log.Error().Str("model", name).Msg("failed to poll model: not unique across all model repositories")
	return pollError(name, errors.New(reasonDuplicate))
}
