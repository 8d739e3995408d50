package repository

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeServable records whether the manager closed it.
type fakeServable struct {
	spec   VersionSpec
	once   sync.Once
	closed chan struct{}
	mu     sync.Mutex
	closes int
}

func (s *fakeServable) Close(context.Context) error {
	s.mu.Lock()
	s.closes++
	s.mu.Unlock()
	s.once.Do(func() { close(s.closed) })
	return nil
}

func (s *fakeServable) isClosed() bool {
	select {
	case <-s.closed:
		return true
	default:
		return false
	}
}

// waitClosed waits for Close, failing the test after a generous bound (the
// manager closes from its own goroutine).
func (s *fakeServable) waitClosed(t *testing.T) {
	t.Helper()
	select {
	case <-s.closed:
	case <-time.After(10 * time.Second):
		t.Fatalf("servable %s/%d was never closed", s.spec.Name, s.spec.Version)
	}
}

// fakeLoader is a Loader whose behaviour each test sets.
type fakeLoader struct {
	mu        sync.Mutex
	complete  func(dir string, cfg *inferencepb.ModelConfig, auto bool) error
	fail      map[string]error         // "name/version" → error from LoadVersion
	gate      map[string]chan struct{} // "name/version" → LoadVersion waits for it
	loads     []VersionSpec
	servables []*fakeServable
}

func newFakeLoader() *fakeLoader {
	return &fakeLoader{fail: map[string]error{}, gate: map[string]chan struct{}{}}
}

func (l *fakeLoader) Complete(_ context.Context, dir string, cfg *inferencepb.ModelConfig, auto bool) error {
	l.mu.Lock()
	f := l.complete
	l.mu.Unlock()
	if f != nil {
		return f(dir, cfg, auto)
	}
	return nil
}

func (l *fakeLoader) LoadVersion(ctx context.Context, spec VersionSpec) (Servable, error) {
	key := spec.Name + "/" + strconv.FormatInt(spec.Version, 10)
	l.mu.Lock()
	gate := l.gate[key]
	l.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.loads = append(l.loads, spec)
	if err := l.fail[key]; err != nil {
		return nil, err
	}
	s := &fakeServable{spec: spec, closed: make(chan struct{})}
	l.servables = append(l.servables, s)
	return s, nil
}

func (l *fakeLoader) setFail(key string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil {
		delete(l.fail, key)
	} else {
		l.fail[key] = err
	}
}

func (l *fakeLoader) loadCount(name string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.loads {
		if s.Name == name {
			n++
		}
	}
	return n
}

// servable returns the latest servable built for name/version.
func (l *fakeLoader) servable(t *testing.T, name string, version int64) *fakeServable {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.servables) - 1; i >= 0; i-- {
		if s := l.servables[i]; s.spec.Name == name && s.spec.Version == version {
			return s
		}
	}
	t.Fatalf("no servable for %s/%d", name, version)
	return nil
}

func (l *fakeLoader) loadOrder() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, s := range l.loads {
		out = append(out, s.Name)
	}
	return out
}

// simpleConfig is a valid configuration for the fake backend.
func simpleConfig(name string) string {
	return fmt.Sprintf(`
name: %q
backend: "fake"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
`, name)
}

// writeModel creates <repo>/<name>/config.pbtxt (unless cfg is "-") and
// the given version directories, each with a model file.
func writeModel(t *testing.T, repo, name, cfg string, versions ...int) string {
	t.Helper()
	dir := filepath.Join(repo, name)
	mustMkdir(t, dir)
	if cfg != "-" {
		mustWrite(t, filepath.Join(dir, configFileName), cfg)
	}
	for _, v := range versions {
		addVersion(t, dir, v)
	}
	return dir
}

func addVersion(t *testing.T, modelDir string, v int) {
	t.Helper()
	vd := filepath.Join(modelDir, strconv.Itoa(v))
	mustMkdir(t, vd)
	mustWrite(t, filepath.Join(vd, "model.fake"), "weights "+strconv.Itoa(v))
}

func mustMkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// newManager builds a Manager over repos and closes it at the end of the
// test, checking that everything drained.
func newManager(t *testing.T, loader Loader, mode ControlMode, repos ...string) *Manager {
	t.Helper()
	m, err := New(Options{Paths: repos, Mode: mode, Loader: loader})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return m
}

// wantErr checks an error's status class and that its text contains every
// fragment.
func wantErr(t *testing.T, err error, code inference.Code, fragments ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v containing %q", code, fragments)
	}
	var ie *inference.Error
	if !errors.As(err, &ie) {
		t.Fatalf("error %q is not an *inference.Error", err)
	}
	if got := inference.CodeOf(err); got != code {
		t.Errorf("error %q has class %v, want %v", err, got, code)
	}
	for _, f := range fragments {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error %q does not contain %q", err, f)
		}
	}
}

func indexOf(m *Manager, readyOnly bool) string {
	var b strings.Builder
	for _, e := range m.Index(readyOnly) {
		fmt.Fprintf(&b, "%s|%s|%s|%s\n", e.Name, e.Version, e.State, e.Reason)
	}
	return b.String()
}

func entry(m *Manager, name, version string) (IndexEntry, bool) {
	for _, e := range m.Index(false) {
		if e.Name == name && e.Version == version {
			return e, true
		}
	}
	return IndexEntry{}, false
}
