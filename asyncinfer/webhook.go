package asyncinfer

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/jsonw"
)

// notifier delivers outcomes to webhooks from a bounded pool of workers
// and a bounded queue: a slow or hanging webhook holds one worker for at
// most attempts × timeout plus the backoffs, and never the queue of
// requests. An outcome that finds the queue full, or is still waiting at
// shutdown, is not marked notified and is sent again after a restart.
type notifier struct {
	queue    chan *Record
	post     func(ctx context.Context, url string, body []byte) error
	attempts int
	timeout  time.Duration
	backoff  time.Duration
	log      zerolog.Logger
	// done records that an outcome was delivered, or given up on.
	done func(id string)

	ctx    context.Context //nolint:containedctx // lifetime of the workers
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// client is the default delivery's, nil when post is a test's.
	client *webhookClient
}

func newNotifier(o Options, log zerolog.Logger, done func(id string)) *notifier {
	n := &notifier{
		queue: make(chan *Record, o.NotifyQueue), post: o.post, attempts: o.NotifyAttempts,
		timeout: o.NotifyTimeout, backoff: o.NotifyBackoff, log: log, done: done,
	}
	if n.post == nil {
		n.client = newWebhookClient()
		n.post = n.client.post
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	for range o.NotifyWorkers {
		n.wg.Go(n.work)
	}
	return n
}

// enqueue hands an outcome to the workers without waiting.
func (n *notifier) enqueue(rec *Record) {
	if n.ctx.Err() != nil {
		return
	}
	select {
	case n.queue <- rec:
	default:
		n.log.Warn().Str("id", rec.ID).Str("webhook", rec.Webhook).
			Msg("webhook queue full: the notification is dropped until the next start")
	}
}

// stop ends the workers, cutting off deliveries in progress.
func (n *notifier) stop() {
	n.cancel()
	n.wg.Wait()
	if n.client != nil {
		n.client.close()
	}
}

func (n *notifier) work() {
	for {
		select {
		case <-n.ctx.Done():
			return
		case rec := <-n.queue:
			n.deliver(rec)
		}
	}
}

// deliver posts one outcome, retrying with a doubling backoff.
func (n *notifier) deliver(rec *Record) {
	body := notification(rec)
	wait := n.backoff
	var err error
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(n.ctx, n.timeout)
		err = n.post(ctx, rec.Webhook, body)
		cancel()
		if err == nil {
			n.done(rec.ID)
			return
		}
		if n.ctx.Err() != nil {
			return // shutdown: sent again after the restart
		}
		if attempt == n.attempts {
			break
		}
		n.log.Debug().Err(err).Str("id", rec.ID).Int("attempt", attempt).Msg("webhook notification failed; retrying")
		t := time.NewTimer(wait)
		select {
		case <-n.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait *= 2
	}
	n.log.Warn().Err(err).Str("id", rec.ID).Str("webhook", rec.Webhook).Int("attempts", n.attempts).
		Msg("webhook notification given up")
	n.done(rec.ID)
}

// notification is the body POSTed to a webhook.
func notification(rec *Record) []byte {
	b := append([]byte(`{"id":`), jsonw.AppendString(nil, rec.ID)...)
	b = append(b, `,"model_name":`...)
	b = jsonw.AppendString(b, rec.Model)
	b = append(b, `,"status":`...)
	b = jsonw.AppendString(b, string(rec.State))
	b = append(b, `,"result_url":`...)
	b = jsonw.AppendString(b, rec.ResultURL)
	if rec.Reason != "" {
		b = append(b, `,"error":`...)
		b = jsonw.AppendString(b, rec.Reason)
	}
	return append(b, '}')
}

// webhookClient delivers notifications over HTTP; each attempt's context
// bounds it. It reads no proxy settings from the environment.
type webhookClient struct{ c *http.Client }

func newWebhookClient() *webhookClient {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: DefaultNotifyWorkers,
		IdleConnTimeout:     90 * time.Second,
	}
	return &webhookClient{c: &http.Client{
		Transport: tr,
		// A webhook that redirects is followed a few times at most.
		CheckRedirect: func(_ *http.Request, via []*http.Request) error {
			if len(via) >= 3 {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}}
}

// post POSTs body as JSON to url: a 2xx status is a delivery.
func (w *webhookClient) post(ctx context.Context, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", contentTypeJSON)
	req.Header.Set("User-Agent", "nereid-async")
	resp, err := w.c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}

// close drops the idle connections, and their goroutines.
func (w *webhookClient) close() { w.c.CloseIdleConnections() }
