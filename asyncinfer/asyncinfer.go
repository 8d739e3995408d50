// Package asyncinfer is Nereid's asynchronous inference: a KServe v2
// inference request is accepted at once with 202 and an id, kept in a
// durable queue on disk (bbolt, the bodies as files), run through the
// server core when the model has a free slot, and its response kept
// until it is fetched or expires; a webhook may be told the outcome.
// The Service is a net/http handler, served by its owner's HTTP server on
// the long jobs port; it streams bodies of up to a gigabyte to disk
// without holding them in memory.
package asyncinfer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/repository"
	"github.com/nereid-project/nereid/server/restricted"
)

// Core is what asynchronous inference needs from the server core;
// *server.Server satisfies it.
//
// Infer keeps the HTTP front end's contract: the request's tensor Data
// may alias memory the caller reuses once Infer returns (here a mapping
// of the stored body), so the core must not keep the request afterwards;
// the caller calls the response's Done once it has written it; a
// decoupled model is refused with an error wrapping inference.ErrDecoupled;
// Infer returns promptly once ctx is cancelled.
//
// ModelConfig finds a model without loading it: an unknown model is a
// NotFound error. RepositoryIndex lists the models of the repositories,
// loaded or not, which is how a model that loads on demand is found.
type Core interface {
	// ModelConfig returns a configuration the caller must not modify.
	ModelConfig(ctx context.Context, name, version string) (*inferencepb.ModelConfig, error)
	RepositoryIndex(ctx context.Context, readyOnly bool) ([]repository.IndexEntry, error)
	Infer(ctx context.Context, req *inference.Request) (*inference.Response, error)
}

// Defaults of Options.
const (
	DefaultMaxRequestBytes = 1 << 30
	DefaultMaxQueue        = 1000
	DefaultMaxConcurrent   = 1
	DefaultMaxAttempts     = 3
	DefaultResultTTL       = 24 * time.Hour
	DefaultNotifyAttempts  = 3
	DefaultNotifyTimeout   = 10 * time.Second
	DefaultNotifyBackoff   = time.Second
	DefaultNotifyWorkers   = 4
	DefaultNotifyQueue     = 1024
	DefaultReadTimeout     = 120 * time.Second
)

// Options configures the service. Zero values select the defaults; Dir
// is required.
type Options struct {
	// Dir holds the queue database and the request and result bodies.
	// One process at a time uses it.
	Dir string
	// MaxRequestBytes caps a request body, after decompression: larger
	// ones are refused with 413.
	MaxRequestBytes int64
	// MaxQueue caps the requests pending or running (or being received)
	// at once: more are refused with 503.
	MaxQueue int
	// MaxConcurrent is the executions of one model at once
	// (SageMaker's MaxConcurrentInvocationsPerInstance).
	MaxConcurrent int
	// MaxAttempts is how many executions a request may start: one that
	// was running when the process died runs again at the next start,
	// until this many have started; then it fails.
	MaxAttempts int
	// ResultTTL is how long a finished request's result (or failure)
	// is kept.
	ResultTTL time.Duration
	// LoadOnDemand tells that the core loads a model of the repositories
	// on its first request (--model-load-on-demand): such a model is
	// accepted while it is not loaded.
	LoadOnDemand bool
	// Restricted holds --http-restricted-api: the inference category
	// applies to every endpoint.
	Restricted restricted.Rules
	// HeaderForwardPattern forwards matching request headers as request
	// parameters, as the HTTP port does.
	HeaderForwardPattern *regexp.Regexp
	// ReadTimeout is how long a client may pause while sending a
	// request's body (a large body may take longer than this in all).
	// The HTTP server that serves the Service bounds the headers and
	// idle connections.
	ReadTimeout time.Duration
	// Webhook notification: attempts per outcome, the timeout of each,
	// the backoff before the first retry (doubling after each), the
	// deliveries at once, and the outcomes waiting (more are dropped and
	// sent again after a restart).
	NotifyAttempts int
	NotifyTimeout  time.Duration
	NotifyBackoff  time.Duration
	NotifyWorkers  int
	NotifyQueue    int
	// Registerer, when set, gets the service's metrics.
	Registerer prometheus.Registerer
	Logger     zerolog.Logger

	// post delivers a webhook notification; a test seam (default: an
	// HTTP POST by the notifier's own client).
	post func(ctx context.Context, url string, body []byte) error
	// finished, when set, is called with each outcome once it is
	// recorded; a test seam.
	finished func(*Record)
}

func (o *Options) fill() {
	if o.MaxRequestBytes <= 0 {
		o.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if o.MaxQueue <= 0 {
		o.MaxQueue = DefaultMaxQueue
	}
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = DefaultMaxConcurrent
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.ResultTTL <= 0 {
		o.ResultTTL = DefaultResultTTL
	}
	if o.NotifyAttempts <= 0 {
		o.NotifyAttempts = DefaultNotifyAttempts
	}
	if o.NotifyTimeout <= 0 {
		o.NotifyTimeout = DefaultNotifyTimeout
	}
	if o.NotifyBackoff <= 0 {
		o.NotifyBackoff = DefaultNotifyBackoff
	}
	if o.NotifyWorkers <= 0 {
		o.NotifyWorkers = DefaultNotifyWorkers
	}
	if o.NotifyQueue <= 0 {
		o.NotifyQueue = DefaultNotifyQueue
	}
	if o.ReadTimeout < 0 {
		o.ReadTimeout = 0
	}
}

// Service is the asynchronous inference service: the queue, its
// workers, the janitor that expires results, the webhook notifier and
// the HTTP handler.
type Service struct {
	core  Core
	opts  Options
	log   zerolog.Logger
	store *store
	met   *metrics
	note  *notifier

	// runCtx is the parent of every execution; cancelRuns ends it when
	// Shutdown stops waiting for them.
	runCtx     context.Context //nolint:containedctx // lifetime of the executions
	cancelRuns context.CancelFunc
	jobs       sync.WaitGroup // executions running
	handlers   sync.WaitGroup // HTTP handlers running

	janitorStop context.CancelFunc
	janitorDone chan struct{}
	janitorWake chan struct{} // capacity 1: an expiry was added

	mu sync.Mutex // guards the fields below
	// models holds the queue of each model that has requests pending or
	// running (or had: the entries stay, as few as the models).
	models map[string]*modelQueue
	// active maps each pending or running request to its model's queue.
	active map[string]*modelQueue
	// depth counts the requests pending, running, or being received.
	depth int
	// stopping: Shutdown began; nothing new is accepted or started.
	stopping bool
	// closed: handlers that have not started yet answer 503.
	closed bool
	// expiries are the finished requests in the order they expire.
	expiries []expiry
}

// modelQueue is one model's requests waiting and the count running.
type modelQueue struct {
	name    string
	pending []string // ids, oldest first
	running int
}

type expiry struct {
	at time.Time
	id string
}

// storeLockTimeout is how long New waits for another process's lock on
// the store.
const storeLockTimeout = time.Second

// New opens (or creates) the queue in opts.Dir, recovers it — requests
// pending are queued again, ones that were running when the process
// stopped run again or fail after MaxAttempts — and starts executing.
// It answers requests as an http.Handler (ServeHTTP).
func New(core Core, opts Options) (*Service, error) {
	if opts.Dir == "" {
		return nil, errors.New("asyncinfer: no directory for the queue")
	}
	opts.fill()
	met, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	st, err := openStore(opts.Dir, storeLockTimeout)
	if err != nil {
		met.unregister(opts.Registerer)
		return nil, err
	}
	s := &Service{
		core: core, opts: opts, log: opts.Logger, store: st, met: met,
		models: map[string]*modelQueue{}, active: map[string]*modelQueue{},
		janitorWake: make(chan struct{}, 1), janitorDone: make(chan struct{}),
	}
	s.runCtx, s.cancelRuns = context.WithCancel(context.Background())
	s.note = newNotifier(opts, s.log, s.markNotified)
	pending, finished, err := s.recover()
	if err != nil {
		s.note.stop()
		s.cancelRuns()
		st.close()
		met.unregister(opts.Registerer)
		return nil, err
	}
	jctx, jstop := context.WithCancel(context.Background())
	s.janitorStop = jstop
	go s.janitor(jctx)

	s.mu.Lock()
	for _, rec := range pending {
		s.enqueueLocked(rec)
	}
	s.mu.Unlock()
	for _, rec := range finished {
		if rec.Webhook != "" && !rec.Notified {
			s.note.enqueue(rec)
		}
	}
	s.log.Info().Str("dir", opts.Dir).Int("pending", len(pending)).Int("finished", len(finished)).
		Msg("asynchronous inference queue opened")
	return s, nil
}

// recover reads the store at start: it returns the requests to run, in
// submission order, and the finished ones; it fails requests that were
// running for the last allowed time, arms the expiry of finished ones
// and removes files no request owns.
func (s *Service) recover() (pending, finished []*Record, err error) {
	recs, bad, err := s.store.all()
	if err != nil {
		return nil, nil, fmt.Errorf("async store: %w", err)
	}
	for _, id := range bad {
		s.log.Warn().Str("id", id).Msg("async store: removing an unreadable record")
		if err := s.store.remove(id); err != nil {
			return nil, nil, err
		}
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].Seq < recs[j].Seq })
	owned := map[string]State{}
	now := time.Now()
	for _, rec := range recs {
		if rec.State == StateRunning {
			interrupted := *rec
			if rec.Attempts >= s.opts.MaxAttempts {
				interrupted.State, interrupted.Finished, interrupted.Status = StateFailed, now, http.StatusInternalServerError
				interrupted.Reason = fmt.Sprintf("the server stopped while the request was running, %d times (--async-max-attempts=%d)",
					rec.Attempts, s.opts.MaxAttempts)
				s.met.finished(&interrupted)
			} else {
				interrupted.State = StatePending
			}
			v, err := json.Marshal(&interrupted)
			if err != nil {
				return nil, nil, err
			}
			if err := s.store.update(func(b buckets) error {
				if err := b.records.Put([]byte(rec.ID), v); err != nil {
					return err
				}
				if interrupted.State == StateFailed {
					return b.bodies.Delete([]byte(rec.ID))
				}
				return nil
			}); err != nil {
				return nil, nil, err
			}
			s.log.Warn().Str("id", rec.ID).Str("model", rec.Model).Int("attempts", rec.Attempts).
				Str("now", string(interrupted.State)).Msg("asynchronous request was running when the server stopped")
			rec = &interrupted
		}
		owned[rec.ID] = rec.State
		switch rec.State {
		case StatePending:
			pending = append(pending, rec)
		case StateDone, StateFailed:
			finished = append(finished, rec)
		case StateRunning:
		}
	}
	sort.SliceStable(finished, func(i, j int) bool { return finished[i].Finished.Before(finished[j].Finished) })
	for _, rec := range finished {
		s.expiries = append(s.expiries, expiry{at: rec.Finished.Add(s.opts.ResultTTL), id: rec.ID})
	}
	// Files of requests that are gone or no longer need them: an upload
	// cut off by a crash, a body kept by a crash after its request
	// finished, a result written by an execution the crash interrupted.
	for _, dir := range []string{requestsDir, resultsDir} {
		ents, err := os.ReadDir(filepath.Join(s.store.dir, dir))
		if err != nil {
			return nil, nil, fmt.Errorf("async store: %w", err)
		}
		for _, e := range ents {
			st, ok := owned[e.Name()]
			keep := ok && (dir == requestsDir && st == StatePending || dir == resultsDir && st == StateDone)
			if !keep {
				if err := os.Remove(filepath.Join(s.store.dir, dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
					return nil, nil, fmt.Errorf("async store: %w", err)
				}
			}
		}
	}
	return pending, finished, nil
}

// Shutdown refuses new requests (503) and waits for the requests being
// received and, until ctx ends, for the executions running; then it
// cancels those still running, which stay in the store to run again at
// the next start, as do the pending ones. It closes the store. The HTTP
// server serving the Service is shut down first, by its owner, so that
// the requests on its connections end before this waits for them.
func (s *Service) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	var err error
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.handlers.Wait()

	drained := make(chan struct{})
	go func() {
		defer close(drained)
		s.jobs.Wait()
	}()
	select {
	case <-drained:
	case <-ctx.Done():
		s.cancelRuns()
		<-drained
	}
	s.cancelRuns()
	s.note.stop()
	s.janitorStop()
	<-s.janitorDone
	if cerr := s.store.close(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	s.met.unregister(s.opts.Registerer)
	return err
}

// errStopping answers requests that arrive once Shutdown began.
var errStopping = inference.Unavailable("the server is shutting down")

// reserve takes a place in the queue for a request about to be
// received; unreserve gives it back when the request is not accepted.
func (s *Service) reserve() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return errStopping
	}
	if s.depth >= s.opts.MaxQueue {
		return inference.Unavailable("the asynchronous inference queue is full: %d requests are pending or running (--async-max-queue=%d)",
			s.depth, s.opts.MaxQueue)
	}
	s.depth++
	return nil
}

func (s *Service) unreserve() {
	s.mu.Lock()
	s.depth--
	s.mu.Unlock()
}

// accept queues a request stored as pending, in the place reserve took.
func (s *Service) accept(rec *Record) {
	s.mu.Lock()
	s.depth--
	s.enqueueLocked(rec)
	s.mu.Unlock()
}

// enqueueLocked queues a pending request and starts what may start.
func (s *Service) enqueueLocked(rec *Record) {
	mq := s.models[rec.Model]
	if mq == nil {
		mq = &modelQueue{name: rec.Model}
		s.models[rec.Model] = mq
	}
	mq.pending = append(mq.pending, rec.ID)
	s.active[rec.ID] = mq
	s.depth++
	s.met.depth(mq)
	s.startLocked(mq)
}

// startLocked starts the model's oldest pending requests while it has
// free slots. Each execution is a goroutine of s.jobs; when it ends it
// starts the next one.
func (s *Service) startLocked(mq *modelQueue) {
	for !s.stopping && mq.running < s.opts.MaxConcurrent && len(mq.pending) > 0 {
		id := mq.pending[0]
		mq.pending[0] = ""
		mq.pending = mq.pending[1:]
		mq.running++
		s.jobs.Add(1)
		go s.run(id, mq)
	}
}

// run executes one request, then frees its slot.
func (s *Service) run(id string, mq *modelQueue) {
	defer s.jobs.Done()
	s.execute(id)
	s.mu.Lock()
	mq.running--
	delete(s.active, id)
	s.depth--
	s.met.depth(mq)
	s.startLocked(mq)
	s.mu.Unlock()
}

// cancelPending removes a pending request from the queue. It reports
// whether the request was pending, and whether it is running (and so
// cannot be cancelled).
func (s *Service) cancelPending(id string) (pending, running bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	mq := s.active[id]
	if mq == nil {
		return false, false
	}
	i := slices.Index(mq.pending, id)
	if i < 0 {
		return false, true
	}
	mq.pending = slices.Delete(mq.pending, i, i+1)
	delete(s.active, id)
	s.depth--
	s.met.depth(mq)
	return true, false
}

// addExpiry arms the expiry of a request that finished at finished.
func (s *Service) addExpiry(id string, finished time.Time) {
	s.mu.Lock()
	s.expiries = append(s.expiries, expiry{at: finished.Add(s.opts.ResultTTL), id: id})
	s.mu.Unlock()
	select {
	case s.janitorWake <- struct{}{}:
	default:
	}
}

// janitor removes finished requests once their time to live is over:
// one goroutine, one timer armed for the earliest expiry.
func (s *Service) janitor(ctx context.Context) {
	defer close(s.janitorDone)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		s.mu.Lock()
		var fire <-chan time.Time
		if len(s.expiries) > 0 {
			// Since Go 1.23 a Reset timer delivers no stale tick.
			timer.Reset(time.Until(s.expiries[0].at))
			fire = timer.C
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-s.janitorWake:
		case <-fire:
			s.expire(time.Now())
		}
	}
}

// expire removes the requests whose time is up at now.
func (s *Service) expire(now time.Time) {
	s.mu.Lock()
	n := 0
	for n < len(s.expiries) && !s.expiries[n].at.After(now) {
		n++
	}
	due := slices.Clone(s.expiries[:n])
	s.expiries = slices.Delete(s.expiries, 0, n)
	s.mu.Unlock()
	for _, e := range due {
		rec, err := s.store.get(e.id)
		if err != nil || !rec.State.finished() {
			continue // deleted by its client, or not ours to expire
		}
		if err := s.store.remove(e.id); err != nil {
			s.log.Warn().Err(err).Str("id", e.id).Msg("expiring an asynchronous result")
			continue
		}
		s.log.Debug().Str("id", e.id).Msg("asynchronous result expired")
	}
}

// markNotified records that a request's outcome was notified (or that
// notifying it was given up).
func (s *Service) markNotified(id string) {
	_, err := s.store.modify(id, func(r *Record) bool {
		if r.Notified {
			return false
		}
		r.Notified = true
		return true
	})
	if err != nil && !errors.Is(err, errNoRecord) {
		s.log.Warn().Err(err).Str("id", id).Msg("recording a webhook notification")
	}
}
