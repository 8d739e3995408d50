package repository

import (
	"context"
	"errors"
	"os"
	"slices"

	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/repository/cloud"
)

// remoteRepositories are the --model-repository paths written as URLs.
// Each is copied into a local directory, which the Manager serves as any
// other repository; fetch brings the copies up to date before a start, a
// poll or an explicit load reads them.
type remoteRepositories struct {
	root    string // where the copies are made
	ownRoot bool   // root was made by Nereid and is removed at close
	mirrors []*cloud.Mirror
	stores  []*cloud.S3
	log     zerolog.Logger
	// life ends at close, which stops a sync in progress: a download of
	// large model files does not hold up the shutdown.
	life context.Context //nolint:containedctx // the repositories' lifetime, not a request's
	end  context.CancelFunc
}

// isRemotePath reports whether a repository path is a URL.
func isRemotePath(p string) bool {
	_, ok := cloud.Scheme(p)
	return ok
}

// openRemoteRepositories parses the URLs among paths and makes an empty
// local copy for each. It returns paths with every URL replaced by its
// copy's directory, and nil remotes when no path is a URL. cacheDir, when
// set, is where the copies are made (it must exist); otherwise a new
// directory under the OS temporary directory is, removed at close.
func openRemoteRepositories(paths []string, cacheDir string, log zerolog.Logger) (local []string, _ *remoteRepositories, err error) {
	var urls []cloud.URL
	for _, p := range paths {
		if !isRemotePath(p) {
			continue
		}
		u, err := cloud.ParseURL(p)
		if err != nil {
			return nil, nil, err
		}
		if u.Scheme != cloud.SchemeS3 {
			return nil, nil, inference.Unsupported("model repository '%s': %s:// repositories are not supported yet (only s3:// and local directories are)", p, u.Scheme)
		}
		urls = append(urls, u)
	}
	if len(urls) == 0 {
		return paths, nil, nil
	}
	life, end := context.WithCancel(context.Background())
	r := &remoteRepositories{log: log, life: life, end: end}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	if cacheDir != "" {
		st, err := os.Stat(cacheDir)
		if err != nil {
			return nil, nil, inference.InvalidArg("the cloud repository cache directory '%s' cannot be used: %w", cacheDir, err)
		}
		if !st.IsDir() {
			return nil, nil, inference.InvalidArg("the cloud repository cache directory '%s' is not a directory", cacheDir)
		}
		r.root = cacheDir
	} else {
		if r.root, err = os.MkdirTemp("", "nereid-cloud-"); err != nil {
			return nil, nil, inference.Internal("failed to create a directory for the cloud model repositories: %w", err)
		}
		r.ownRoot = true
	}
	local = slices.Clone(paths)
	next := 0
	for i, p := range paths {
		if !isRemotePath(p) {
			continue
		}
		u := urls[next]
		next++
		store, err := cloud.NewS3(context.Background(), u, cloud.S3Options{})
		if err != nil {
			return nil, nil, err
		}
		r.stores = append(r.stores, store)
		m, err := cloud.NewMirror(u, store, r.root)
		if err != nil {
			return nil, nil, err
		}
		r.mirrors = append(r.mirrors, m)
		local[i] = m.Dir()
	}
	return local, r, nil
}

// fetch syncs every copy with its store. A copy that fails to sync keeps
// what it had; the error names each repository that failed.
func (r *remoteRepositories) fetch(ctx context.Context) error {
	if r == nil {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(r.life, cancel)()
	var errs []error
	for _, m := range r.mirrors {
		rep, err := m.Sync(ctx)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if rep.Fetched > 0 || rep.Removed > 0 {
			r.log.Info().Str("repository", m.URL().String()).Int("objects", rep.Objects).
				Int("fetched", rep.Fetched).Int("removed", rep.Removed).Msg("cloud model repository synced")
		}
	}
	return errors.Join(errs...)
}

// close removes the local copies (and the directory holding them when
// Nereid made it) and drops the stores' connections.
func (r *remoteRepositories) close() {
	if r == nil {
		return
	}
	r.end()
	for _, s := range r.stores {
		s.Close()
	}
	for _, m := range r.mirrors {
		if err := m.Remove(); err != nil {
			r.log.Warn().Err(err).Str("repository", m.URL().String()).Msg("failed to remove the local copy of a cloud model repository")
		}
	}
	if r.ownRoot {
		if err := os.RemoveAll(r.root); err != nil {
			r.log.Warn().Err(err).Str("directory", r.root).Msg("failed to remove the cloud model repository directory")
		}
	}
}
