package repository

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/nereid-project/nereid/inference"
)

// scanTTL is how long the repository index reuses a listing of the
// repositories. Loads, polls and registrations list them afresh; the
// index of a repository of thousands of models does not walk the disk on
// every call.
const scanTTL = time.Second

// sourceSet is the repositories a Manager serves from: the flag paths,
// then those registered at run time (SageMaker multi-model loads), with
// the last listing of them.
type sourceSet struct {
	mu      sync.Mutex
	list    []source // read-only slices: replaced, never modified
	scanned map[string]repoModel
	scanErr error
	at      time.Time // when scanned was taken; zero: stale
}

func newSourceSet(paths []string) *sourceSet {
	s := &sourceSet{}
	for _, p := range paths {
		s.list = append(s.list, source{path: p})
	}
	return s
}

// snapshot returns the current repositories.
func (s *sourceSet) snapshot() []source {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.list
}

// scan lists the models of every repository; fresh forces a new listing,
// otherwise one younger than scanTTL is reused.
func (s *sourceSet) scan(fresh bool) (map[string]repoModel, error) {
	s.mu.Lock()
	if !fresh && !s.at.IsZero() && time.Since(s.at) < scanTTL {
		defer s.mu.Unlock()
		return s.scanned, s.scanErr
	}
	list := s.list
	s.mu.Unlock()
	scanned, err := scanRepositories(list)
	s.mu.Lock()
	defer s.mu.Unlock()
	if slices.Equal(sourcePaths(list), sourcePaths(s.list)) {
		s.scanned, s.scanErr, s.at = scanned, err, time.Now()
	}
	return scanned, err
}

// invalidate makes the next scan list the repositories afresh.
func (s *sourceSet) invalidate() {
	s.mu.Lock()
	s.at = time.Time{}
	s.mu.Unlock()
}

func sourcePaths(list []source) []string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = s.path
	}
	return out
}

// RegisterRepository adds a model repository at run time. names maps a
// model subdirectory of path to the name it is served under; a
// subdirectory not in names keeps its own name. It is AlreadyExists when
// path is already a repository, or when a name it would serve is served
// from another repository. Nothing is loaded: Load (or an on-demand load)
// then finds the models there.
func (m *Manager) RegisterRepository(path string, names map[string]string) error {
	if !filepath.IsAbs(path) {
		return inference.InvalidArg("failed to register '%s', the repository path must be absolute", path)
	}
	path = filepath.Clean(path)
	st, err := os.Stat(path)
	if err != nil {
		return inference.InvalidArg("failed to register '%s': %w", path, err)
	}
	if !st.IsDir() {
		return inference.InvalidArg("failed to register '%s', it is not a directory", path)
	}
	seen := map[string]string{}
	for sub, name := range names {
		if err := validateModelName(name); err != nil {
			return err
		}
		if sub == "" || sub != filepath.Base(sub) || sub == "." || sub == ".." {
			return inference.InvalidArg("failed to register '%s', '%s' is not a subdirectory name", path, sub)
		}
		if other, dup := seen[name]; dup {
			return inference.InvalidArg("failed to register '%s', subdirectories '%s' and '%s' both map to '%s'", path, other, sub, name)
		}
		seen[name] = sub
	}
	src := source{path: path, names: maps.Clone(names), runtime: true}
	set := m.sources
	set.mu.Lock()
	defer set.mu.Unlock()
	for _, s := range set.list {
		if s.path == path {
			return inference.Errorf(inference.CodeAlreadyExists, "model repository '%s' has already been registered", path)
		}
	}
	served := map[string]string{} // name → repository
	for _, s := range set.list {
		for _, sub := range subdirectories(s.path) {
			served[s.modelName(sub)] = s.path
		}
	}
	for _, sub := range subdirectories(path) {
		if other, ok := served[src.modelName(sub)]; ok {
			return inference.Errorf(inference.CodeAlreadyExists,
				"failed to register '%s', model '%s' is already served from repository '%s'", path, src.modelName(sub), other)
		}
	}
	set.list = append(slices.Clone(set.list), src)
	set.at = time.Time{}
	m.log.Info().Str("repository", path).Msg("model repository registered")
	return nil
}

// UnregisterRepository removes a repository added by RegisterRepository.
// Models loaded from it keep serving until they are unloaded; they are
// then no longer found.
func (m *Manager) UnregisterRepository(path string) error {
	path = filepath.Clean(path)
	set := m.sources
	set.mu.Lock()
	defer set.mu.Unlock()
	i := slices.IndexFunc(set.list, func(s source) bool { return s.path == path })
	if i < 0 || !set.list[i].runtime {
		return inference.NotFound("failed to unregister '%s', it is not a registered model repository", path)
	}
	set.list = slices.Delete(slices.Clone(set.list), i, i+1)
	set.at = time.Time{}
	m.log.Info().Str("repository", path).Msg("model repository unregistered")
	return nil
}

// Exists reports whether a repository has the model and, when version is
// not "", its version directory; the error says which is missing.
func (m *Manager) Exists(name, version string) error {
	dir, err := locateModel(m.sources.snapshot(), name)
	if err != nil {
		return inference.NotFound("model '%s': %v", name, err)
	}
	if version == "" {
		return nil
	}
	if st, err := os.Stat(filepath.Join(dir, version)); err != nil || !st.IsDir() {
		return inference.NotFound("model '%s' has no version directory '%s'", name, version)
	}
	return nil
}
