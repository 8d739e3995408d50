package modelmesh

import (
	"encoding/json"
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/encoding/prototext"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/repository"
)

// configFile is the model configuration every Triton model directory may
// hold.
const configFile = "config.pbtxt"

// systemDirs are trees a modelPath may never point into.
var systemDirs = []string{"/dev", "/proc", "/sys"}

// checkModelID refuses an id that cannot name a model.
func checkModelID(id string) error {
	switch {
	case id == "":
		return inference.InvalidArg("modelId must not be empty")
	case strings.TrimSpace(id) == "":
		return inference.InvalidArg("invalid modelId '%s': it must not be only white space", id)
	case strings.Contains(id, "..") || strings.ContainsAny(id, "/\\\x00"):
		return inference.InvalidArg("invalid modelId '%s': it must not contain '..', '/', '\\' or NUL", id)
	}
	return nil
}

// checkModelPath refuses a modelPath that cannot be a local model
// directory.
func checkModelPath(path string) error {
	switch {
	case path == "":
		return inference.InvalidArg("modelPath must not be empty")
	case strings.ContainsRune(path, 0):
		return inference.InvalidArg("invalid modelPath: it contains a NUL byte")
	case !filepath.IsAbs(path):
		return inference.InvalidArg("invalid modelPath '%s': it must be an absolute path on the runtime's file system", path)
	}
	clean := filepath.Clean(path)
	for _, d := range systemDirs {
		if clean == d || strings.HasPrefix(clean, d+"/") {
			return inference.InvalidArg("invalid modelPath '%s': it must not be under %s", path, d)
		}
	}
	return nil
}

// layout is what a load serves: model directories by the name of their
// link in the per-load repository, and the link served under the model
// id. The other links are an ensemble's composing models, served under
// their own names.
type layout struct {
	dirs   map[string]string // link name → model directory
	served string
}

// names lists the models the layout serves: id first, then the composing
// models by name.
func (l layout) names(id string) []string {
	out := []string{id}
	for _, link := range slices.Sorted(maps.Keys(l.dirs)) {
		if link != l.served {
			out = append(out, link)
		}
	}
	return out
}

// resolveLayout finds the model a modelPath holds. A directory with
// config.pbtxt or a numeric version directory is the model itself;
// otherwise it is a model repository whose only model, or whose one
// ensemble among several models, is served under the id.
func resolveLayout(id, path string) (layout, error) {
	var none layout
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return none, inference.InvalidArg("modelPath '%s' does not exist", path)
	case err != nil:
		return none, inference.InvalidArg("modelPath '%s' cannot be read: %v", path, err)
	case !st.IsDir():
		return none, inference.InvalidArg("modelPath '%s' is not a directory: Nereid loads a Triton model directory "+
			"(config.pbtxt and numeric version directories) or a model repository of them", path)
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return none, inference.InvalidArg("modelPath '%s' cannot be read: %v", path, err)
	}
	if isModelDir(path, entries) {
		link := "model"
		if link == id { // a link named as the id would not be renamed to it
			link = "model_"
		}
		return layout{dirs: map[string]string{link: path}, served: link}, nil
	}
	var models, ensembles []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") || !isDir(path, e) {
			continue
		}
		sub := filepath.Join(path, e.Name())
		subEntries, err := os.ReadDir(sub)
		if err != nil || !isModelDir(sub, subEntries) {
			continue
		}
		models = append(models, e.Name())
		if cfg := readConfig(sub); cfg.GetPlatform() == "ensemble" || cfg.GetEnsembleScheduling() != nil {
			ensembles = append(ensembles, e.Name())
		}
	}
	var served string
	switch {
	case len(models) == 0:
		return none, inference.InvalidArg("modelPath '%s' holds no model: it must hold config.pbtxt and numeric version "+
			"directories, or model directories that do", path)
	case len(models) == 1:
		served = models[0]
	case len(ensembles) == 1:
		served = ensembles[0]
	default:
		return none, inference.InvalidArg("modelPath '%s' holds %d models (%s) and %d ensembles among them: "+
			"it must hold one model, or one ensemble with its composing models", path, len(models), strings.Join(models, ", "), len(ensembles))
	}
	lay := layout{dirs: make(map[string]string, len(models)), served: served}
	for _, m := range models {
		if m != served && m == id {
			return none, inference.InvalidArg("modelPath '%s': its model directory '%s' would be served under the id "+
				"of the model '%s' it serves", path, m, served)
		}
		lay.dirs[m] = filepath.Join(path, m)
	}
	return lay, nil
}

// ownPaths rewrites the paths of the per-load repository in a load error
// to the model directories they link to, which the caller knows.
func (l layout) ownPaths(err error, repo string) error {
	var ie *inference.Error
	if !errors.As(err, &ie) {
		return err
	}
	msg := err.Error()
	for link, target := range l.dirs {
		msg = strings.ReplaceAll(msg, filepath.Join(repo, link), target)
	}
	if msg == err.Error() {
		return err
	}
	return &inference.Error{Code: inference.CodeOf(err), Msg: msg, Err: err}
}

// isModelDir reports whether a directory's entries make it a model
// directory: a configuration or a version directory.
func isModelDir(dir string, entries []fs.DirEntry) bool {
	for _, e := range entries {
		if e.Name() == configFile && !isDir(dir, e) {
			return true
		}
		if _, ok := versionNumber(e.Name()); ok && isDir(dir, e) {
			return true
		}
	}
	return false
}

// isDir reports whether an entry is a directory, through a symlink too.
func isDir(parent string, e fs.DirEntry) bool {
	if e.IsDir() {
		return true
	}
	if e.Type()&fs.ModeSymlink == 0 {
		return false
	}
	st, err := os.Stat(filepath.Join(parent, e.Name()))
	return err == nil && st.IsDir()
}

// versionNumber is the version a directory name stands for, as Triton
// reads them: digits, no leading zero.
func versionNumber(name string) (int64, bool) {
	if name == "" || (len(name) > 1 && name[0] == '0') || strings.TrimLeft(name, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseInt(name, 10, 64)
	return n, err == nil
}

// readConfig parses a model directory's config.pbtxt for what the
// service looks at (platform, version policy, parameters); nil when there
// is none or it does not parse (the load then says why).
func readConfig(dir string) *inferencepb.ModelConfig {
	data, err := os.ReadFile(filepath.Join(dir, configFile))
	if err != nil {
		return nil
	}
	cfg := &inferencepb.ModelConfig{}
	if err := (prototext.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, cfg); err != nil {
		return nil
	}
	return cfg
}

// Bounds of predictSize's walk: it must answer within ModelMesh's 500 ms.
const (
	predictMaxEntries = 10_000
	predictMaxDepth   = 16
)

// predictSize estimates the memory of the layout's models before they
// load, as the model cache does: per version to load, the configuration's
// nereid_memory_bytes, else the bytes of the version's files.
func (l layout) predictSize() int64 {
	var total int64
	budget := predictMaxEntries
	for _, dir := range l.dirs {
		total += predictModel(dir, &budget)
	}
	return total
}

func predictModel(dir string, budget *int) int64 {
	cfg := readConfig(dir)
	entries, _ := os.ReadDir(dir)
	var versions []int64
	for _, e := range entries {
		if v, ok := versionNumber(e.Name()); ok && isDir(dir, e) {
			versions = append(versions, v)
		}
	}
	slices.Sort(versions)
	versions = chosenVersions(cfg.GetVersionPolicy(), versions)
	if p, ok := cfg.GetParameters()[repository.ParamMemoryBytes]; ok {
		if n, err := strconv.ParseInt(strings.TrimSpace(p.GetStringValue()), 10, 64); err == nil && n > 0 {
			return n * int64(max(len(versions), 1))
		}
	}
	var total int64
	for _, v := range versions {
		total += treeBytes(filepath.Join(dir, strconv.FormatInt(v, 10)), 0, budget)
	}
	return total
}

// chosenVersions applies a version policy to the sorted version numbers
// on disk; no policy is Triton's default, the latest one.
func chosenVersions(p *inferencepb.ModelVersionPolicy, have []int64) []int64 {
	switch {
	case p.GetAll() != nil:
		return have
	case p.GetSpecific() != nil:
		var out []int64
		for _, v := range p.GetSpecific().GetVersions() {
			if slices.Contains(have, v) {
				out = append(out, v)
			}
		}
		return out
	default:
		n := 1
		if l := p.GetLatest(); l != nil && l.GetNumVersions() > 0 {
			n = int(l.GetNumVersions())
		}
		return have[max(len(have)-n, 0):]
	}
}

// treeBytes is the size of the regular files under dir, following
// symlinks, within the walk's budget of entries.
func treeBytes(dir string, depth int, budget *int) int64 {
	if depth > predictMaxDepth {
		return 0
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var total int64
	for _, e := range entries {
		if *budget <= 0 {
			return total
		}
		*budget--
		p := filepath.Join(dir, e.Name())
		st, err := os.Stat(p)
		switch {
		case err != nil:
		case st.IsDir():
			total += treeBytes(p, depth+1, budget)
		case st.Mode().IsRegular():
			total += st.Size()
		}
	}
	return total
}

// modelKey is what the service reads of a load's modelKey: ModelMesh
// Serving's JSON with the storage details (unknown keys are ignored, and
// so is a key that is not JSON).
type modelKey struct {
	diskSize int64 // disk_size_bytes, set by ModelMesh Serving's puller; 0 when absent
}

func parseModelKey(s string) modelKey {
	var raw struct {
		DiskSizeBytes json.Number `json:"disk_size_bytes"`
	}
	if s == "" || json.Unmarshal([]byte(s), &raw) != nil {
		return modelKey{}
	}
	n, err := raw.DiskSizeBytes.Int64()
	if err != nil || n < 0 {
		return modelKey{}
	}
	return modelKey{diskSize: n}
}

// makeRepository makes the per-load repository: a fresh directory of the
// working directory with a symlink to each of the layout's model
// directories.
func (s *service) makeRepository(l layout) (string, error) {
	dir := filepath.Join(s.dir, strconv.FormatUint(s.seq.Add(1), 10))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", inference.Internal("cannot make a repository for the model: %v", err)
	}
	for link, target := range l.dirs {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			_ = os.RemoveAll(dir)
			return "", inference.Internal("cannot make a repository for the model: %v", err)
		}
	}
	return dir, nil
}

// dropRepository unregisters a per-load repository and removes it.
func (s *service) dropRepository(repo string, log zerolog.Logger) {
	if err := s.core.UnregisterRepository(repo); err != nil {
		log.Warn().Err(err).Msg("ModelMesh: unregistering a model's repository")
	}
	s.removeRepository(repo, log)
}

// removeRepository removes a per-load repository's directory (its links,
// never the model files).
func (s *service) removeRepository(repo string, log zerolog.Logger) {
	if err := os.RemoveAll(repo); err != nil {
		log.Warn().Err(err).Msg("ModelMesh: removing a model's repository")
	}
}
