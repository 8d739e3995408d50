package python

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/procmem"
)

// instance is one model instance: one stub process at a time, replaced by
// a fresh one (initialize and all) when it dies or stops answering.
type instance struct {
	model *model
	spec  backends.InstanceSpec
	log   zerolog.Logger

	mu      sync.Mutex // guards cur, lastErr and changed
	cur     *stub      // nil while a replacement starts
	lastErr error      // why the last replacement failed
	changed chan struct{}

	closing       chan struct{}
	closeOnce     sync.Once
	superviseDone chan struct{}
}

var (
	_ backends.Instance = (*instance)(nil)
	_ backends.Closer   = (*instance)(nil)
)

// start starts a stub and initializes the model in it.
func (i *instance) start(ctx context.Context) (*stub, error) {
	cfg := *i.model.stubCfg
	cfg.logger = i.log
	s := i.model.backend.claim(i.model.path, &cfg)
	if s != nil {
		s.handler.Store(cfg.handler)
	} else {
		var err error
		if s, err = startStub(&cfg); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, max(cfg.timeout, 5*time.Second)*4)
	defer cancel()
	if _, err := s.initialize(ctx, "serve", i.model.path, i.model.initArgs(i.spec), i.model.config, i.model.decoupled); err != nil {
		s.stop(2 * time.Second)
		return nil, modelError(i.model.spec.Name, err)
	}
	i.log.Debug().Int("stub_pid", s.pid()).Msg("Python stub started")
	return s, nil
}

// modelError names the model in a failure of its stub.
func modelError(name string, err error) error {
	return inference.Errorf(inference.CodeOf(err), "python model '%s': %w", name, err)
}

// current returns the running stub, nil while one is being replaced.
func (i *instance) current() *stub {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.cur
}

// waitStub returns the running stub, waiting for a replacement to start
// until ctx ends; a replacement that failed to start is reported.
func (i *instance) waitStub(ctx context.Context) (*stub, error) {
	for {
		i.mu.Lock()
		s, lastErr := i.cur, i.lastErr
		if i.changed == nil {
			i.changed = make(chan struct{})
		}
		changed := i.changed
		i.mu.Unlock()
		if s != nil {
			select {
			case <-s.done:
				// Dead, and the supervisor has not noticed yet: wait for
				// the replacement rather than fail on the corpse.
			default:
				return s, nil
			}
		} else if lastErr != nil {
			return nil, lastErr
		}
		select {
		case <-changed:
		case <-i.closing:
			return nil, inference.Unavailable("model '%s' is unloading", i.model.spec.Name)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (i *instance) setCurrent(s *stub, err error) {
	i.mu.Lock()
	i.cur, i.lastErr = s, err
	if i.changed != nil {
		close(i.changed)
		i.changed = nil
	}
	i.mu.Unlock()
}

// supervise owns the instance's stubs: it checks the running one's health
// and replaces it when it dies, until the instance closes.
func (i *instance) supervise(s *stub) {
	defer close(i.superviseDone)
	timeout := i.model.opts.StubTimeout
	for {
		if !i.watch(s, timeout) {
			return
		}
		i.setCurrent(nil, nil)
		s.stop(time.Second)
		backoff := 100 * time.Millisecond
		for {
			next, err := i.start(context.Background())
			if err == nil {
				s = next
				i.setCurrent(s, nil)
				i.log.Warn().Int("stub_pid", s.pid()).Msg("Python stub restarted")
				break
			}
			i.log.Error().Err(err).Msg("Python stub failed to restart")
			i.setCurrent(nil, err)
			select {
			case <-i.closing:
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 10*time.Second)
		}
	}
}

// watch returns false when the instance closes, true when s died or was
// killed for not answering a health check in time.
func (i *instance) watch(s *stub, timeout time.Duration) bool {
	period := min(max(timeout/3, 100*time.Millisecond), 5*time.Second)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-i.closing:
			return false
		case <-s.done:
			i.log.Error().Err(s.goneError(nil)).Msg("Python stub is gone; starting a new one")
			return true
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			err := s.ping(ctx)
			cancel()
			if err != nil && !errors.Is(err, errStubGone) {
				if s.delivering.Load() > 0 {
					continue // the reader waits on a slow client, not on the stub
				}
				select {
				case <-i.closing:
					return false
				default:
				}
				i.log.Error().Err(err).Dur("stub_timeout", timeout).Msg("Python stub did not answer its health check: killing it")
				s.kill()
				<-s.done
				return true
			}
		}
	}
}

// Execute runs a batch in the stub.
func (i *instance) Execute(ctx context.Context, batch []*inference.Request) error {
	_, err := i.ExecutePhased(ctx, batch)
	return err
}

// ExecutePhased is Execute that also measures the execution's phases, for
// the statistics' compute_input / compute_infer / compute_output split.
// Input runs from the call to the exec frame handed to the stub: waiting
// for a running stub, copying the inputs into the shared memory and
// writing the frame. Inference is the model's execute in the stub, up to
// its done frame. Output is what follows: for a model that is not
// decoupled, reading the responses back (views of the stub's memory,
// checked against the configuration) and sending them; for a decoupled
// one, whose responses come on their own, releasing the batch.
func (i *instance) ExecutePhased(ctx context.Context, batch []*inference.Request) (backends.Phases, error) {
	start := time.Now()
	s, err := i.waitStub(ctx)
	if err != nil {
		return backends.Phases{}, err
	}
	m, sent, err := s.exec(ctx, batch, i.model.rules, i.model.decoupled)
	if err != nil {
		return backends.Phases{}, modelError(i.model.spec.Name, err)
	}
	done := time.Now()
	ph := backends.Phases{Input: sent.Sub(start)}
	if i.model.decoupled {
		if m.Error != nil {
			return ph, m.Error.err()
		}
	} else {
		err = s.finishUnary(batch, m, i.model.rules)
	}
	ph.Output = time.Since(done)
	return ph, err
}

// Close calls finalize in the stub and reaps it.
func (i *instance) Close() error {
	i.closeOnce.Do(func() { close(i.closing) })
	<-i.superviseDone
	s := i.current()
	if s == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), i.model.opts.StubTimeout)
	err := s.finalize(ctx)
	cancel()
	s.stop(5 * time.Second)
	if err != nil {
		return modelError(i.model.spec.Name, err)
	}
	return nil
}

// MemoryBytes is the resident memory of the instance's stub process, which
// the model cache counts on top of what the server's own process grew by
// while the model loaded.
func (i *instance) MemoryBytes() int64 {
	if s := i.current(); s != nil {
		return procmem.Resident(s.pid())
	}
	return 0
}
