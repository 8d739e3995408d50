package asyncinfer

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// copyDir copies the store's directory as it is on disk at this moment:
// what a process killed now would leave behind.
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o750)
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(dst)
		if err != nil {
			return err
		}
		defer out.Close()
		_, err = io.Copy(out, in)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A process that dies with one request running and two pending leaves a
// store from which a new process runs all three, in submission order,
// the interrupted one counted as a second attempt.
func TestCrashRecoveryRunsEverythingAccepted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir, crashed := t.TempDir(), t.TempDir()
		core := newFakeCore()
		gate := make(chan struct{})
		core.setGate(gate)
		s := newService(t, core, dir, nil)
		var ids []string
		for i, name := range []string{"a", "b", "c"} {
			values := []float32{float32(i)}
			if name == "b" { // a body and a result too large for the database: files
				values = append(values, make([]float32, inlineMax)...)
			}
			ids = append(ids, submit(t, s, "ident", jsonBody(name, values...), nil).ID)
		}
		if _, err := os.Stat(s.store.requestPath(ids[1])); err != nil {
			t.Fatalf("large body not in a file: %v", err)
		}
		synctest.Wait() // "a" is running, held by the gate
		if st := statusOf(t, s, ids[0]); st["status"] != "running" || st["attempts"] != 1.0 {
			t.Fatalf("first request %v", st)
		}
		copyDir(t, dir, crashed)

		core2 := newFakeCore()
		var outcomes []*Record
		s2 := newService(t, core2, crashed, func(o *Options) { o.finished = func(r *Record) { outcomes = append(outcomes, r) } })
		synctest.Wait()
		if got := core2.ran(); !slices.Equal(got, []string{"a", "b", "c"}) {
			t.Errorf("after the crash ran %v, want a, b, c", got)
		}
		for i, id := range ids {
			st := statusOf(t, s2, id)
			wantAttempts := 1.0
			if i == 0 {
				wantAttempts = 2
			}
			if st["status"] != "done" || st["attempts"] != wantAttempts {
				t.Errorf("request %d after the crash: %v", i, st)
			}
			w := call(s2, http.MethodGet, resultsPath+id, nil, nil)
			if w.Code != http.StatusOK || resultValues(t, w.Body.Bytes())[0] != float32(i) {
				t.Errorf("result %d: %d %s", i, w.Code, w.Body)
			}
			if hasBody(s2, id) {
				t.Errorf("request body %d kept after it finished", i)
			}
		}
		if len(outcomes) != 3 {
			t.Errorf("%d outcomes", len(outcomes))
		}
		shutdown(t, s2)
		close(gate)
		shutdown(t, s)
	})
}

// A request interrupted by crashes MaxAttempts times fails with the
// reason; a file no record owns is removed at start.
func TestCrashRecoveryGivesUpAfterMaxAttempts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		core := newFakeCore()
		gate := make(chan struct{})
		core.setGate(gate)
		s := newService(t, core, dir, func(o *Options) { o.MaxAttempts = 2 })
		id := submit(t, s, "ident", jsonBody("x", 1), nil).ID
		synctest.Wait()
		for crash := 1; crash <= 2; crash++ {
			next := t.TempDir()
			copyDir(t, dir, next)
			close(gate)
			shutdown(t, s)
			dir = next
			gate = make(chan struct{})
			core = newFakeCore()
			core.setGate(gate)
			orphan := filepath.Join(dir, requestsDir, newID())
			if err := os.WriteFile(orphan, []byte("cut off"), 0o600); err != nil {
				t.Fatal(err)
			}
			s = newService(t, core, dir, func(o *Options) { o.MaxAttempts = 2 })
			synctest.Wait()
			if _, err := os.Stat(orphan); !os.IsNotExist(err) {
				t.Errorf("orphan body kept: %v", err)
			}
			st := statusOf(t, s, id)
			if crash == 1 && (st["status"] != "running" || st["attempts"] != 2.0) {
				t.Errorf("after one crash: %v", st)
			}
			if crash == 2 {
				if st["status"] != "failed" || !strings.Contains(st["error"].(string), "the server stopped while the request was running, 2 times") {
					t.Errorf("after two crashes: %v", st)
				}
				w := call(s, http.MethodGet, resultsPath+id, nil, nil)
				if w.Code != http.StatusInternalServerError || !strings.Contains(w.Body.String(), "--async-max-attempts=2") {
					t.Errorf("result after two crashes: %d %s", w.Code, w.Body)
				}
				if hasBody(s, id) {
					t.Errorf("the failed request's body is kept")
				}
			}
		}
		close(gate)
		shutdown(t, s)
		if len(core.ran()) != 0 {
			t.Errorf("the failed request ran again: %v", core.ran())
		}
	})
}

// Shutdown leaves pending work in the store and puts an execution it
// cuts off back, without counting its attempt.
func TestShutdownLeavesWorkQueued(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		core := newFakeCore()
		core.setGate(make(chan struct{})) // never opens
		s := newService(t, core, dir, nil)
		a := submit(t, s, "ident", jsonBody("a", 1), nil).ID
		b := submit(t, s, "ident", jsonBody("b", 2), nil).ID
		synctest.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if w := call(s, http.MethodGet, requestsPath+a, nil, nil); w.Code != http.StatusServiceUnavailable {
			t.Errorf("after shutdown: %d", w.Code)
		}
		core2 := newFakeCore()
		s2 := newService(t, core2, dir, nil)
		synctest.Wait()
		if got := core2.ran(); !slices.Equal(got, []string{"a", "b"}) {
			t.Errorf("after restart ran %v", got)
		}
		for _, id := range []string{a, b} {
			if st := statusOf(t, s2, id); st["status"] != "done" || st["attempts"] != 1.0 {
				t.Errorf("%s: %v", id, st)
			}
		}
		shutdown(t, s2)
	})
}

// Requests of one model run one at a time, oldest first, by default;
// another model's run beside them; MaxConcurrent allows more at once.
func TestOrderingAndConcurrencyPerModel(t *testing.T) {
	for _, n := range []int{1, 3} {
		synctest.Test(t, func(t *testing.T) {
			core := newFakeCore()
			gate := make(chan struct{})
			core.setGate(gate)
			s := newService(t, core, t.TempDir(), func(o *Options) { o.MaxConcurrent = n })
			var want []string
			for i := range 6 {
				id := string(rune('a' + i))
				want = append(want, id)
				submit(t, s, "ident", jsonBody(id, 1), nil)
			}
			submit(t, s, "other", jsonBody("z", 1), nil)
			synctest.Wait()
			if got := core.ran(); len(got) != n+1 || !slices.Contains(got, "z") {
				t.Errorf("MaxConcurrent %d: running %v", n, got)
			}
			close(gate)
			synctest.Wait()
			got := slices.DeleteFunc(core.ran(), func(id string) bool { return id == "z" })
			if n == 1 && !slices.Equal(got, want) {
				t.Errorf("ran %v, want %v", got, want)
			}
			if core.peak["ident"] != n || core.peak["other"] != 1 {
				t.Errorf("MaxConcurrent %d: peaks %v", n, core.peak)
			}
			shutdown(t, s)
		})
	}
}

// The queue cap counts requests pending and running; a full queue is
// 503 with its depth, and frees up as requests finish.
func TestQueueCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		core := newFakeCore()
		gate := make(chan struct{})
		core.setGate(gate)
		s := newService(t, core, t.TempDir(), func(o *Options) { o.MaxQueue = 2 })
		submit(t, s, "ident", jsonBody("a", 1), nil)
		submit(t, s, "ident", jsonBody("b", 1), nil)
		synctest.Wait()
		w := call(s, http.MethodPost, "/v2/models/ident/infer", jsonBody("c", 1), nil)
		if w.Code != http.StatusServiceUnavailable ||
			!strings.Contains(w.Body.String(), "queue is full: 2 requests are pending or running (--async-max-queue=2)") {
			t.Errorf("full queue: %d %s", w.Code, w.Body)
		}
		if recs, _, _ := s.store.all(); len(recs) != 2 {
			t.Errorf("%d requests stored, want 2", len(recs))
		}
		close(gate)
		synctest.Wait()
		submit(t, s, "ident", jsonBody("c", 1), nil)
		shutdown(t, s)
	})
}

// A pending request can be cancelled, a running one cannot, a finished
// one is deleted with its result.
func TestDelete(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		core := newFakeCore()
		gate := make(chan struct{})
		core.setGate(gate)
		s := newService(t, core, t.TempDir(), nil)
		a := submit(t, s, "ident", jsonBody("a", 1), nil).ID
		b := submit(t, s, "ident", jsonBody("b", 1), nil).ID
		synctest.Wait()
		if w := call(s, http.MethodDelete, requestsPath+a, nil, nil); w.Code != http.StatusConflict {
			t.Errorf("delete running: %d %s", w.Code, w.Body)
		}
		if w := call(s, http.MethodDelete, requestsPath+b, nil, nil); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"status":"cancelled"`) {
			t.Errorf("delete pending: %d %s", w.Code, w.Body)
		}
		if hasBody(s, b) {
			t.Errorf("cancelled body kept")
		}
		close(gate)
		synctest.Wait()
		if got := core.ran(); !slices.Equal(got, []string{"a"}) {
			t.Errorf("ran %v", got)
		}
		if w := call(s, http.MethodDelete, requestsPath+a, nil, nil); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"status":"deleted"`) {
			t.Errorf("delete done: %d %s", w.Code, w.Body)
		}
		for _, id := range []string{a, b} {
			if w := call(s, http.MethodGet, resultsPath+id, nil, nil); w.Code != http.StatusNotFound {
				t.Errorf("result of a deleted request: %d", w.Code)
			}
			if w := call(s, http.MethodDelete, requestsPath+id, nil, nil); w.Code != http.StatusNotFound {
				t.Errorf("second delete: %d", w.Code)
			}
		}
		if hasResult(s, a) {
			t.Errorf("deleted result kept")
		}
		shutdown(t, s)
	})
}

// Results expire ResultTTL after they finish, by the janitor's one
// timer; a request still pending does not.
func TestResultsExpire(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		core := newFakeCore()
		s := newService(t, core, t.TempDir(), func(o *Options) { o.ResultTTL = time.Hour })
		a := submit(t, s, "ident", jsonBody("a", 1), nil).ID
		synctest.Wait()
		time.Sleep(30 * time.Minute)
		gate := make(chan struct{})
		core.setGate(gate)
		b := submit(t, s, "ident", jsonBody("b", 1), nil).ID
		c := submit(t, s, "ident", jsonBody("c", 1), nil).ID
		synctest.Wait()
		time.Sleep(30*time.Minute + time.Second)
		synctest.Wait()
		if w := call(s, http.MethodGet, resultsPath+a, nil, nil); w.Code != http.StatusNotFound {
			t.Errorf("a after its TTL: %d", w.Code)
		}
		if hasResult(s, a) {
			t.Errorf("expired result kept")
		}
		for _, id := range []string{b, c} {
			if w := call(s, http.MethodGet, resultsPath+id, nil, nil); w.Code != http.StatusAccepted {
				t.Errorf("unfinished request after an hour: %d", w.Code)
			}
		}
		close(gate)
		synctest.Wait()
		time.Sleep(59 * time.Minute)
		synctest.Wait()
		if w := call(s, http.MethodGet, resultsPath+c, nil, nil); w.Code != http.StatusOK {
			t.Errorf("c before its TTL: %d", w.Code)
		}
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		if w := call(s, http.MethodGet, resultsPath+c, nil, nil); w.Code != http.StatusNotFound {
			t.Errorf("c after its TTL: %d", w.Code)
		}
		shutdown(t, s)
	})
}

// Finished requests recovered at start keep their expiry.
func TestExpiryAfterRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		s := newService(t, newFakeCore(), dir, func(o *Options) { o.ResultTTL = time.Hour })
		a := submit(t, s, "ident", jsonBody("a", 1), nil).ID
		synctest.Wait()
		shutdown(t, s)
		time.Sleep(40 * time.Minute)
		s = newService(t, newFakeCore(), dir, func(o *Options) { o.ResultTTL = time.Hour })
		if w := call(s, http.MethodGet, resultsPath+a, nil, nil); w.Code != http.StatusOK {
			t.Errorf("after restart: %d", w.Code)
		}
		time.Sleep(21 * time.Minute)
		synctest.Wait()
		if w := call(s, http.MethodGet, resultsPath+a, nil, nil); w.Code != http.StatusNotFound {
			t.Errorf("after its TTL: %d", w.Code)
		}
		shutdown(t, s)
	})
}

// hasBody reports whether a request's body is stored, in a file or in
// the database.
func hasBody(s *Service, id string) bool {
	_, ferr := os.Stat(s.store.requestPath(id))
	_, berr := s.store.blob(bucketBodies, id)
	return ferr == nil || berr == nil
}

func hasResult(s *Service, id string) bool {
	_, ferr := os.Stat(s.store.resultPath(id))
	_, berr := s.store.blob(bucketResults, id)
	return ferr == nil || berr == nil
}
