package asyncinfer

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// hooks is a fake webhook endpoint: post records every attempt and
// answers with the function of its URL.
type hooks struct {
	mu       sync.Mutex
	attempts map[string][]time.Time // by request id
	bodies   map[string]map[string]any
	answer   func(ctx context.Context, attempt int) error
}

func newHooks(answer func(ctx context.Context, attempt int) error) *hooks {
	return &hooks{attempts: map[string][]time.Time{}, bodies: map[string]map[string]any{}, answer: answer}
}

func (h *hooks) post(ctx context.Context, _ string, body []byte) error {
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		return err
	}
	id, _ := m["id"].(string)
	h.mu.Lock()
	h.attempts[id] = append(h.attempts[id], time.Now())
	h.bodies[id] = m
	n := len(h.attempts[id])
	h.mu.Unlock()
	return h.answer(ctx, n)
}

func (h *hooks) count(id string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.attempts[id])
}

func (h *hooks) times(id string) []time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]time.Time(nil), h.attempts[id]...)
}

func (h *hooks) body(id string) map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.bodies[id]
}

const hook = "http://hooks.example/notify"

// A webhook that hangs gets NotifyAttempts tries, each cut off after
// NotifyTimeout, with a doubling backoff between them; meanwhile the
// queue runs on, and the outcome is marked notified once given up.
func TestWebhookThatHangs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHooks(func(ctx context.Context, _ int) error {
			<-ctx.Done()
			return ctx.Err()
		})
		s := newService(t, newFakeCore(), t.TempDir(), func(o *Options) {
			o.post, o.NotifyWorkers = h.post, 2
		})
		start := time.Now()
		var ids []string
		for range 6 {
			ids = append(ids, submit(t, s, "ident", jsonBody("x", 1), map[string]string{HeaderNotifyURL: hook}).ID)
		}
		synctest.Wait()
		// Every request ran at once, whatever the webhooks do.
		for _, id := range ids {
			if st := statusOf(t, s, id); st["status"] != "done" {
				t.Errorf("%s while its webhook hangs: %v", id, st)
			}
		}
		// One notification: 10 s, 1 s backoff, 10 s, 2 s, 10 s.
		time.Sleep(33*time.Second + time.Millisecond)
		synctest.Wait()
		first := ids[0]
		if n := h.count(first); n != DefaultNotifyAttempts {
			t.Fatalf("%d attempts, want %d", n, DefaultNotifyAttempts)
		}
		at := h.times(first)
		for i, want := range []time.Duration{0, 11 * time.Second, 23 * time.Second} {
			if got := at[i].Sub(start); got != want {
				t.Errorf("attempt %d at %v, want %v", i+1, got, want)
			}
		}
		// Two workers, six outcomes: three rounds.
		time.Sleep(2 * 33 * time.Second)
		synctest.Wait()
		for _, id := range ids {
			rec, err := s.store.get(id)
			if err != nil || !rec.Notified || h.count(id) != DefaultNotifyAttempts {
				t.Errorf("%s: notified %v after %d attempts (%v)", id, rec != nil && rec.Notified, h.count(id), err)
			}
		}
		shutdown(t, s)
	})
}

// A webhook that fails once is tried again and gets the outcome: id,
// status, result URL and, on failure, the error.
func TestWebhookRetryThenDelivery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHooks(func(_ context.Context, attempt int) error {
			if attempt == 1 {
				return errors.New("webhook answered 500")
			}
			return nil
		})
		core := newFakeCore()
		s := newService(t, core, t.TempDir(), func(o *Options) { o.post = h.post })
		ok := submit(t, s, "ident", jsonBody("x", 1), map[string]string{HeaderNotifyURL: hook})
		bad := submit(t, s, "ident", []byte(`{"inputs": []`), map[string]string{HeaderNotifyURL: hook})
		plain := submit(t, s, "ident", jsonBody("x", 1), nil)
		synctest.Wait()
		time.Sleep(time.Second)
		synctest.Wait()
		for _, c := range []struct {
			sub    submitted
			status string
		}{{ok, "done"}, {bad, "failed"}} {
			if n := h.count(c.sub.ID); n != 2 {
				t.Errorf("%s: %d attempts", c.status, n)
			}
			b := h.body(c.sub.ID)
			if b["status"] != c.status || b["result_url"] != c.sub.ResultURL || b["model_name"] != "ident" {
				t.Errorf("notification %v", b)
			}
			if _, hasErr := b["error"]; hasErr != (c.status == "failed") {
				t.Errorf("notification %v: error field", b)
			}
			if rec, _ := s.store.get(c.sub.ID); !rec.Notified {
				t.Errorf("%s not marked notified", c.status)
			}
		}
		if h.count(plain.ID) != 0 {
			t.Errorf("a request without a webhook was notified")
		}
		shutdown(t, s)
	})
}

// An outcome not yet notified when the server stops is notified after
// the restart; a full notification queue drops, never blocks.
func TestWebhookAfterRestartAndFullQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		hang := newHooks(func(ctx context.Context, _ int) error {
			<-ctx.Done()
			return ctx.Err()
		})
		s := newService(t, newFakeCore(), dir, func(o *Options) {
			o.post, o.NotifyWorkers, o.NotifyQueue = hang.post, 1, 1
		})
		var ids []string
		for range 4 {
			ids = append(ids, submit(t, s, "ident", jsonBody("x", 1), map[string]string{HeaderNotifyURL: hook}).ID)
		}
		synctest.Wait()
		for _, id := range ids {
			if st := statusOf(t, s, id); st["status"] != "done" {
				t.Errorf("%s: %v", id, st)
			}
		}
		shutdown(t, s) // one delivery cut off, one waiting, two dropped

		h := newHooks(func(context.Context, int) error { return nil })
		s = newService(t, newFakeCore(), dir, func(o *Options) { o.post = h.post })
		synctest.Wait()
		for _, id := range ids {
			rec, _ := s.store.get(id)
			if h.count(id) != 1 || !rec.Notified {
				t.Errorf("%s after restart: %d deliveries, notified %v", id, h.count(id), rec.Notified)
			}
		}
		shutdown(t, s)
	})
}

// The default delivery is a JSON POST; a non-2xx answer is a failure.
func TestHTTPPost(t *testing.T) {
	var got []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != contentTypeJSON {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		got = make([]byte, r.ContentLength)
		_, _ = r.Body.Read(got)
		if r.URL.Path == "/fail" {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	c := newWebhookClient()
	defer c.close()
	if err := c.post(context.Background(), srv.URL+"/ok", []byte(`{"id":"x"}`)); err != nil || string(got) != `{"id":"x"}` {
		t.Errorf("delivery: %v %s", err, got)
	}
	if err := c.post(context.Background(), srv.URL+"/fail", []byte(`{}`)); err == nil {
		t.Errorf("a 500 answer counted as delivered")
	}
}
