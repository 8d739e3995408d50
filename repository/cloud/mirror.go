package cloud

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nereid-project/nereid/inference"
)

// Limits on what one repository may hold, so that a bucket of millions of
// objects cannot stall a poll or fill the disk with names.
const (
	maxObjects     = 100_000
	maxKeySegments = 64
	fetchWorkers   = 4
)

// Object is one stored object as a listing or a fetch reports it.
type Object struct {
	Key      string
	Size     int64
	ETag     string
	Modified time.Time
}

// same reports whether two reports describe the same object content.
func (o Object) same(p Object) bool {
	if o.Size != p.Size || !o.Modified.Equal(p.Modified) {
		return false
	}
	return o.ETag == p.ETag
}

// Store is the object store a Mirror copies from. Its errors are
// inference errors that name the location and the cause.
type Store interface {
	// List returns every object whose key starts with prefix. It fails
	// rather than return part of a listing.
	List(ctx context.Context, prefix string) ([]Object, error)
	// Fetch writes the bytes of one object to w and returns the object as
	// it was fetched; Size is -1 when the store did not say.
	Fetch(ctx context.Context, key string, w io.Writer) (Object, error)
}

// Mirror keeps a local copy of the objects under one URL's prefix. Sync
// brings the copy up to date; between syncs the copy does not change, so
// whoever reads it after a Sync sees one consistent state of the store.
type Mirror struct {
	url     URL
	store   Store
	dir     string // the copy: what the repository reads
	staging string // fetched objects wait here until the whole sync has them

	mu   sync.Mutex        // one Sync at a time; guards have
	have map[string]Object // path in dir (slash-separated) → the object it holds
}

// NewMirror makes a mirror of u in a new directory under root and returns
// it; nothing is fetched until Sync.
func NewMirror(u URL, store Store, root string) (*Mirror, error) {
	base, err := os.MkdirTemp(root, u.Scheme+"-"+u.Bucket+"-")
	if err != nil {
		return nil, inference.Internal("failed to create the local copy of model repository '%s' under '%s': %w", u, root, err)
	}
	m := &Mirror{url: u, store: store, dir: filepath.Join(base, "repository"), staging: filepath.Join(base, "staging"), have: map[string]Object{}}
	for _, d := range []string{m.dir, m.staging} {
		if err := os.Mkdir(d, 0o755); err != nil {
			os.RemoveAll(base)
			return nil, inference.Internal("failed to create the local copy of model repository '%s': %w", u, err)
		}
	}
	return m, nil
}

// Dir is the local copy of the repository.
func (m *Mirror) Dir() string { return m.dir }

// URL is the location the mirror copies.
func (m *Mirror) URL() URL { return m.url }

// Remove deletes the local copy. The mirror must not be used after.
func (m *Mirror) Remove() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return os.RemoveAll(filepath.Dir(m.dir))
}

// SyncReport says what one Sync changed in the copy.
type SyncReport struct {
	Objects int // objects in the store under the prefix
	Fetched int // fetched because they were new or changed
	Removed int // files and directories removed because their objects were gone
}

// Sync lists the store and makes the copy match it: objects that are new,
// or whose size, ETag or time changed, are fetched; files whose objects
// are gone are removed. Every changed object is fetched before the copy is
// touched, so a failure leaves the copy as the last successful Sync made
// it. Directory markers (keys ending in "/") make empty directories, as
// an empty version directory needs.
func (m *Mirror) Sync(ctx context.Context) (SyncReport, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	objs, err := m.store.List(ctx, m.url.Prefix)
	if err != nil {
		return SyncReport{}, err
	}
	files, dirs, err := m.layout(objs)
	if err != nil {
		return SyncReport{}, err
	}
	rep := SyncReport{Objects: len(objs)}

	var todo []string
	for _, rel := range slices.Sorted(maps.Keys(files)) {
		old, ok := m.have[rel]
		if ok && old.same(files[rel]) && sizeIs(filepath.Join(m.dir, filepath.FromSlash(rel)), old.Size) {
			continue
		}
		todo = append(todo, rel)
	}
	staged, err := m.fetchAll(ctx, files, todo)
	defer func() {
		for _, s := range staged {
			if s.path != "" {
				os.Remove(s.path) // those not renamed into the copy
			}
		}
	}()
	if err != nil {
		return SyncReport{}, err
	}

	// Apply: take away what is gone, then put the fetched files in place.
	removed, err := m.prune(files, dirs)
	rep.Removed = removed
	if err != nil {
		return rep, err
	}
	for d := range dirs {
		if err := os.MkdirAll(filepath.Join(m.dir, filepath.FromSlash(d)), 0o755); err != nil {
			return rep, inference.Internal("model repository '%s': failed to create directory '%s' of the local copy: %w", m.url, d, err)
		}
	}
	for i, rel := range todo {
		target := filepath.Join(m.dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return rep, inference.Internal("model repository '%s': failed to create the directory of '%s' in the local copy: %w", m.url, rel, err)
		}
		if err := os.Rename(staged[i].path, target); err != nil {
			return rep, inference.Internal("model repository '%s': failed to place '%s' in the local copy: %w", m.url, rel, err)
		}
		staged[i].path = ""
		m.have[rel] = staged[i].obj
		rep.Fetched++
	}
	return rep, nil
}

// layout maps the listed objects to paths in the copy: files by path, and
// every directory they need (markers included). A key that cannot be a
// path, or a path that would be both a file and a directory, fails the
// whole sync: a copy that silently lacks a file would load another model.
func (m *Mirror) layout(objs []Object) (files map[string]Object, dirs map[string]bool, _ error) {
	if len(objs) > maxObjects {
		return nil, nil, inference.InvalidArg("model repository '%s' has %d objects, more than the %d Nereid copies", m.url, len(objs), maxObjects)
	}
	files, dirs = map[string]Object{}, map[string]bool{}
	for _, o := range objs {
		rel, ok := strings.CutPrefix(o.Key, m.url.Prefix)
		if !ok {
			return nil, nil, inference.Internal("model repository '%s': the store listed '%s', which is outside the prefix", m.url, clip(o.Key))
		}
		if rel == "" {
			continue // the prefix's own directory marker
		}
		marker := strings.HasSuffix(rel, "/")
		rel = strings.TrimSuffix(rel, "/")
		if err := checkKeyPath(rel); err != nil {
			return nil, nil, inference.InvalidArg("model repository '%s': object '%s' cannot be copied: %v", m.url, clip(o.Key), err)
		}
		if marker {
			dirs[rel] = true
		} else {
			if _, dup := files[rel]; dup {
				return nil, nil, inference.InvalidArg("model repository '%s': object '%s' is listed twice", m.url, clip(o.Key))
			}
			files[rel] = o
		}
		for d := parentOf(rel); d != ""; d = parentOf(d) {
			dirs[d] = true
		}
	}
	for rel := range files {
		if dirs[rel] {
			return nil, nil, inference.InvalidArg("model repository '%s': '%s' is both an object and a directory of other objects", m.url, clip(m.url.Prefix+rel))
		}
	}
	return files, dirs, nil
}

// checkKeyPath refuses object names that are no plain relative path.
func checkKeyPath(rel string) error {
	segs := strings.Split(rel, "/")
	if len(segs) > maxKeySegments {
		return fmt.Errorf("more than %d path segments", maxKeySegments)
	}
	for _, s := range segs {
		switch {
		case s == "":
			return errors.New("an empty path segment ('//')")
		case s == "." || s == "..":
			return fmt.Errorf("a '%s' path segment", s)
		case len(s) > 255:
			return errors.New("a path segment longer than 255 bytes")
		case strings.ContainsAny(s, "\x00\\"):
			return errors.New("a NUL or backslash in its name")
		}
	}
	if !filepath.IsLocal(filepath.FromSlash(rel)) {
		return errors.New("it is not a local path")
	}
	return nil
}

func parentOf(rel string) string {
	i := strings.LastIndex(rel, "/")
	if i < 0 {
		return ""
	}
	return rel[:i]
}

func sizeIs(path string, size int64) bool {
	st, err := os.Lstat(path)
	return err == nil && st.Mode().IsRegular() && st.Size() == size
}

// stagedObject is one fetched object waiting in the staging directory.
type stagedObject struct {
	path string // "" once moved into the copy (or never written)
	obj  Object
}

// fetchAll fetches the objects named in todo into the staging directory,
// a few at a time; on the first failure the others stop. The result has
// one entry per todo entry, in order.
func (m *Mirror) fetchAll(ctx context.Context, files map[string]Object, todo []string) ([]stagedObject, error) {
	out := make([]stagedObject, len(todo))
	if len(todo) == 0 {
		return out, nil
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(fetchWorkers, len(todo)) {
		wg.Go(func() {
			for i := range next {
				s, err := m.fetchOne(ctx, files[todo[i]])
				out[i] = s
				if err != nil {
					cancel(err)
				}
			}
		})
	}
feed:
	for i := range todo {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return out, err
	}
	return out, nil
}

func (m *Mirror) fetchOne(ctx context.Context, want Object) (stagedObject, error) {
	f, err := os.CreateTemp(m.staging, "object-")
	if err != nil {
		return stagedObject{}, inference.Internal("model repository '%s': failed to stage '%s': %w", m.url, clip(want.Key), err)
	}
	s := stagedObject{path: f.Name()}
	if err := f.Chmod(0o644); err != nil { // as the files of a local repository
		f.Close()
		return s, inference.Internal("model repository '%s': failed to stage '%s': %w", m.url, clip(want.Key), err)
	}
	w := &countingWriter{w: f}
	got, err := m.store.Fetch(ctx, want.Key, w)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = inference.Internal("model repository '%s': failed to stage '%s': %w", m.url, clip(want.Key), cerr)
	}
	if err == nil && got.Size >= 0 && w.n != got.Size {
		err = inference.Unavailable("model repository '%s': object '%s' was cut short: %d of %d bytes fetched", m.url, clip(want.Key), w.n, got.Size)
	}
	if err != nil {
		return s, err
	}
	// The listing's report is what the next listing is compared with: an
	// object that changed between the listing and the fetch then differs
	// at the next sync and is fetched again.
	s.obj = want
	return s, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// prune removes from the copy every file that is not in files and every
// directory that is not in dirs, and forgets them. It returns how many
// entries it removed.
func (m *Mirror) prune(files map[string]Object, dirs map[string]bool) (int, error) {
	removed := 0
	var errs []error
	err := filepath.WalkDir(m.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		if p == m.dir {
			return nil
		}
		rel, rerr := filepath.Rel(m.dir, p)
		if rerr != nil {
			return rerr
		}
		rel = filepath.ToSlash(rel)
		keep := dirs[rel]
		if !d.IsDir() {
			_, keep = files[rel]
			keep = keep && d.Type().IsRegular()
		}
		if keep {
			return nil
		}
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
			return nil
		}
		removed++
		if d.IsDir() {
			return fs.SkipDir
		}
		return nil
	})
	for rel := range m.have {
		if _, ok := files[rel]; !ok {
			delete(m.have, rel)
		}
	}
	if err = errors.Join(append(errs, err)...); err != nil {
		return removed, inference.Internal("model repository '%s': failed to remove deleted objects from the local copy: %w", m.url, err)
	}
	return removed, nil
}
