package repository

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/nereid-project/nereid/inference"
)

// Reasons with Triton's wording.
const (
	reasonDuplicate = "model appears in two or more repositories"
	reasonNotFound  = "model not found in any model repository"
	reasonUnloaded  = "unloaded"
)

// Limits on what a fingerprint walks, so that a pathological model
// directory (a symlink loop, millions of files) cannot stall polling.
const (
	fingerprintMaxDepth   = 16
	fingerprintMaxEntries = 100_000
)

// isDirEntry reports whether a directory entry is a directory, following
// symbolic links (Kubernetes mounts are made of them).
func isDirEntry(parent string, e fs.DirEntry) bool {
	if e.IsDir() {
		return true
	}
	if e.Type()&fs.ModeSymlink == 0 {
		return false
	}
	st, err := os.Stat(filepath.Join(parent, e.Name()))
	return err == nil && st.IsDir()
}

// subdirectories lists the non-hidden subdirectories of dir, by name.
func subdirectories(dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") && isDirEntry(dir, e) {
			out = append(out, e.Name())
		}
	}
	return out // os.ReadDir sorts by name
}

// dirContent maps each entry of dir to whether it is a directory; nil when
// dir cannot be read.
func dirContent(dir string) map[string]bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	out := make(map[string]bool, len(entries))
	for _, e := range entries {
		out[e.Name()] = isDirEntry(dir, e)
	}
	return out
}

// parseVersionDir returns the version a directory name stands for: digits
// only, no leading zero (Triton ignores "01").
func parseVersionDir(name string) (int64, bool) {
	if name == "" || (len(name) > 1 && name[0] == '0') {
		return 0, false
	}
	for _, c := range name {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseInt(name, 10, 64)
	return v, err == nil
}

// versionDirs lists the numeric version directories of a model, ascending.
// Other subdirectories (configs, warmup, initial_state, …) are ignored.
func versionDirs(modelDir string) ([]int64, error) {
	entries, err := os.ReadDir(modelDir)
	if err != nil {
		return nil, err
	}
	var out []int64
	for _, e := range entries {
		if v, ok := parseVersionDir(e.Name()); ok && isDirEntry(modelDir, e) {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return out, nil
}

// repoModel is one model directory found in the repositories.
type repoModel struct {
	dir       string
	duplicate bool // the name appears in more than one repository
}

// source is one repository directory: a --model-repository path, or one
// registered at run time, which may serve some of its subdirectories under
// other names.
type source struct {
	path    string
	names   map[string]string // subdirectory → served name; read-only
	runtime bool              // registered at run time
}

// modelName is the name a subdirectory of the repository is served under.
func (s source) modelName(subdir string) string {
	if n, ok := s.names[subdir]; ok {
		return n
	}
	return subdir
}

// dirOf returns the directory serving a model name in this repository, if
// the repository has one.
func (s source) dirOf(name string) (string, bool) {
	sub := ""
	for d, n := range s.names {
		if n == name {
			sub = d
			break
		}
	}
	if sub == "" {
		if _, renamed := s.names[name]; renamed {
			return "", false // the directory of that name serves another name
		}
		sub = name
	}
	if strings.HasPrefix(sub, ".") {
		return "", false
	}
	dir := filepath.Join(s.path, sub)
	st, err := os.Stat(dir)
	return dir, err == nil && st.IsDir()
}

// scanRepositories lists the models of every repository. A repository that
// cannot be read is reported in err; the models of the others are still
// returned.
func scanRepositories(sources []source) (map[string]repoModel, error) {
	models := map[string]repoModel{}
	var errs []error
	for _, src := range sources {
		entries, err := os.ReadDir(src.path)
		if err != nil {
			errs = append(errs, fmt.Errorf("failed to poll model repository '%s': %w", src.path, err))
			continue
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") || !isDirEntry(src.path, e) {
				continue
			}
			name := src.modelName(e.Name())
			if m, ok := models[name]; ok {
				m.duplicate = true
				models[name] = m
				continue
			}
			models[name] = repoModel{dir: filepath.Join(src.path, e.Name())}
		}
	}
	return models, errors.Join(errs...)
}

// errModelNotFound is locateModel's error for a name no repository has.
var errModelNotFound = errors.New(reasonNotFound)

// locateModel finds the directory of one model in the repositories.
func locateModel(sources []source, name string) (string, error) {
	var found []string
	for _, src := range sources {
		if dir, ok := src.dirOf(name); ok {
			found = append(found, dir)
		}
	}
	switch len(found) {
	case 0:
		return "", errModelNotFound
	case 1:
		return found[0], nil
	default:
		return "", errors.New(reasonDuplicate)
	}
}

// fingerprint summarizes a model directory so that polling can tell that
// it changed: every entry's path, type, size and modification time, and the
// bytes of the configuration file (an edit within the same second and size
// still shows).
func fingerprint(modelDir, cfgPath string) string {
	h := sha256.New()
	entries := 0
	var walk func(dir, rel string, depth int)
	walk = func(dir, rel string, depth int) {
		list, err := os.ReadDir(dir)
		if err != nil {
			fmt.Fprintf(h, "!%s %v\n", rel, err)
			return
		}
		for _, e := range list {
			if entries++; entries > fingerprintMaxEntries {
				return
			}
			p := filepath.Join(dir, e.Name())
			r := filepath.Join(rel, e.Name())
			st, err := os.Stat(p) // follows links
			if err != nil {
				fmt.Fprintf(h, "!%s %v\n", r, err)
				continue
			}
			fmt.Fprintf(h, "%s %v %d %d\n", r, st.Mode(), st.Size(), st.ModTime().UnixNano())
			if st.IsDir() && depth < fingerprintMaxDepth {
				walk(p, r, depth+1)
			}
		}
	}
	walk(modelDir, "", 0)
	fmt.Fprintf(h, "config %s\n", cfgPath)
	if data, err := os.ReadFile(cfgPath); err == nil {
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// writeOverrideFiles writes the files of a load request into a new private
// directory and returns it. Keys are "<version>/<path>" relative to the
// model directory; a key that would leave the directory is refused.
func writeOverrideFiles(model string, files map[string][]byte) (_ string, err error) {
	dir, err := os.MkdirTemp("", "nereid-model-")
	if err != nil {
		return "", inference.Internal("failed to load '%s', failed to create a directory for the model files: %w", model, err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	keys := slices.Sorted(maps.Keys(files))
	for _, key := range keys {
		param := "file:" + key
		rel := filepath.FromSlash(key)
		target := filepath.Join(dir, rel)
		if !filepath.IsLocal(rel) {
			return "", inference.InvalidArg("failed to load '%s', Invalid file parameter '%s' with normalized path '%s' must stay within model directory.",
				model, param, target)
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			if errors.Is(err, fs.ErrExist) || errors.Is(err, syscall.ENOTDIR) {
				return "", inference.InvalidArg("failed to load '%s', Invalid file parameter '%s', directory has been created as a file", model, param)
			}
			return "", inference.Internal("failed to load '%s', failed to write file parameter '%s': %w", model, param, err)
		}
		if st, err := os.Stat(target); err == nil && st.IsDir() {
			return "", inference.InvalidArg("failed to load '%s', Invalid file parameter '%s', a directory of that name already exists", model, param)
		}
		if err := os.WriteFile(target, files[key], 0o644); err != nil {
			return "", inference.Internal("failed to load '%s', failed to write file parameter '%s': %w", model, param, err)
		}
	}
	return dir, nil
}
