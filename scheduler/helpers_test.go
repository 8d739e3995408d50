package scheduler

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nereid-project/nereid/inference"
)

// inferer is what every scheduler offers the server core.
type inferer interface {
	Infer(ctx context.Context, req *inference.Request) error
}

var (
	_ inferer                  = (*Direct)(nil)
	_ inferer                  = (*DynamicBatcher)(nil)
	_ inferer                  = (*SequenceBatcher)(nil)
	_ inference.ResponseSender = (*collector)(nil)
)

// infer runs req on s the way the server core does (a response path set,
// the request failed with Infer's error) and returns its only response once
// the final flag has come; more or fewer than one response is an error.
func infer(ctx context.Context, s inferer, req *inference.Request) (*inference.Response, error) {
	resps, err := inferStream(ctx, s, req)
	if err != nil {
		return nil, err
	}
	if len(resps) != 1 {
		return nil, fmt.Errorf("request %q: %d responses, want exactly one", req.ID, len(resps))
	}
	return resps[0], nil
}

// inferStream is infer for any number of responses: all of them, in order.
func inferStream(ctx context.Context, s inferer, req *inference.Request) ([]*inference.Response, error) {
	return collect(ctx, req, nil).run(ctx, s)
}

// delivery is one call a collector received.
type delivery struct {
	req   string              // the request's ID
	resp  *inference.Response // nil: the final flag alone, or a failure
	final bool
	err   error // set for Fail
	at    time.Time
}

// journal records what several collectors received, in the order it
// arrived, for tests of the order across requests.
type journal struct {
	mu  sync.Mutex // guards log
	log []delivery
}

func (j *journal) add(d delivery) {
	j.mu.Lock()
	j.log = append(j.log, d)
	j.mu.Unlock()
}

func (j *journal) entries() []delivery {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.log)
}

// collector is a request's response path in tests, in the server core's
// place: it keeps the responses and the final flag or failure, and notes
// every breach of the inference.ResponseSender contract by the scheduler
// and the instance. It is safe for concurrent use.
type collector struct {
	req    *inference.Request
	id     string
	ctx    context.Context //nolint:containedctx // the request's, for Cancelled
	j      *journal        // may be nil
	finalC chan struct{}   // closed with the final flag
	// finalDelay, when set, is how long Send takes to deliver the final
	// flag: a client slow to read the last response.
	finalDelay time.Duration

	sending atomic.Bool // a Send is running: two at once is a breach

	mu       sync.Mutex // guards the fields below
	resps    []*inference.Response
	final    bool
	err      error
	released bool // the caller is done with the request: nothing may reach it any more
	breaches []string
}

// collect installs a collector as req's response path.
func collect(ctx context.Context, req *inference.Request, j *journal) *collector {
	c := &collector{req: req, id: req.ID, ctx: ctx, j: j, finalC: make(chan struct{})}
	req.SetSender(c)
	return c
}

func (c *collector) Send(resp *inference.Response, final bool) error {
	overlap := !c.sending.CompareAndSwap(false, true)
	if !overlap {
		defer c.sending.Store(false)
	}
	if final && c.finalDelay > 0 {
		time.Sleep(c.finalDelay)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if overlap {
		c.breachLocked("Send while another Send of the request runs")
	}
	switch {
	case c.released:
		c.breachLocked(fmt.Sprintf("Send(final=%v) after the request was released", final))
		return inference.Internal("response sent after the request was released")
	case c.final:
		c.breachLocked(fmt.Sprintf("Send(final=%v) after the final flag", final))
		return inference.Internal("response sent after the final response")
	case resp == nil && !final:
		c.breachLocked("Send of a nil response without the final flag")
		return inference.Internal("a response without data must carry the final flag")
	}
	if resp != nil {
		c.resps = append(c.resps, resp)
	}
	if c.j != nil {
		c.j.add(delivery{req: c.id, resp: resp, final: final, at: time.Now()})
	}
	if final {
		c.final = true
		close(c.finalC)
	}
	if c.ctx.Err() != nil {
		return inference.Errorf(inference.CodeCancelled, "request %q cancelled", c.id)
	}
	return nil
}

func (c *collector) Fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.released {
		c.breachLocked(fmt.Sprintf("Fail(%v) after the request was released", err))
		return
	}
	if c.final {
		return // allowed, and ignored
	}
	if err == nil {
		c.breachLocked("Fail(nil)")
		err = errors.New("Fail(nil)")
	}
	c.final, c.err = true, err
	if c.j != nil {
		c.j.add(delivery{req: c.id, final: true, err: err, at: time.Now()})
	}
	close(c.finalC)
}

func (c *collector) Cancelled() bool { return c.ctx.Err() != nil }

func (c *collector) breachLocked(what string) {
	c.breaches = append(c.breaches, fmt.Sprintf("request %q: %s", c.id, what))
}

// run is what the core does with a request whose sender c is: Infer, the
// request failed with Infer's error, then the wait for the final flag. It
// releases the request once it has returned, as the core gives its
// response path back then; breaches seen until then are its error.
func (c *collector) run(ctx context.Context, s inferer) ([]*inference.Response, error) {
	if err := s.Infer(ctx, c.req); err != nil {
		c.Fail(err)
	}
	<-c.finalC
	c.mu.Lock()
	defer c.mu.Unlock()
	c.released = true
	if len(c.breaches) > 0 {
		return c.resps, errors.New(fmt.Sprint(c.breaches))
	}
	return c.resps, c.err
}

// wait blocks until the final flag has come.
func (c *collector) wait() { <-c.finalC }

// isFinal reports whether the final flag has come.
func (c *collector) isFinal() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.final
}

// responses returns the responses so far and the failure, if any.
func (c *collector) responses() ([]*inference.Response, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.resps), c.err
}

// check returns the breaches seen so far, nil without any.
func (c *collector) check() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.breaches) == 0 {
		return nil
	}
	return errors.New(fmt.Sprint(c.breaches))
}

// bubble runs f as the subtest name inside a synctest bubble, so that each
// case of a table reports on its own.
func bubble(t *testing.T, name string, f func(t *testing.T)) {
	t.Helper()
	t.Run(name, func(t *testing.T) { synctest.Test(t, f) })
}
