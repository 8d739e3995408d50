package sagemaker

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/protobuf/encoding/prototext"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// modelLocation is where a multi-model load finds its model: the
// repository to register and the sub-directory of it that holds the model
// the load serves.
type modelLocation struct {
	repo   string // absolute, symlinks resolved
	subdir string // a directory name inside repo
}

// systemDirs are the trees a model URL may never point into, whatever the
// model root is: SageMaker's contract, which Triton enforces too.
var systemDirs = []string{"/dev", "/proc", "/sys"}

// checkModelName refuses a name that cannot be a model or directory name:
// the hash of POST /models and the TargetModel header both become one.
func checkModelName(what, name string) error {
	switch {
	case name == "":
		return inference.InvalidArg("%s must not be empty", what)
	case name == "." || name == ".." || strings.Contains(name, ".."):
		return inference.InvalidArg("invalid %s '%s': it must not contain '..'", what, name)
	case strings.ContainsAny(name, "/\\\x00"):
		return inference.InvalidArg("invalid %s '%s': it must not contain a path separator", what, name)
	case strings.TrimSpace(name) == "":
		return inference.InvalidArg("invalid %s '%s': it must not be only white space", what, name)
	}
	return nil
}

// underDir reports whether path is dir or inside it; both are clean.
func underDir(path, dir string) bool {
	if dir == "/" {
		return true
	}
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// resolveModelURL checks the url of a multi-model load and finds the
// repository and model directory it names. The URL must be
// <root>/<name>/model or <root>/<name>/model/<subdir>, with no '..'
// segment and nothing under /dev, /proc or /sys; once its symlinks are
// resolved it must still lie inside the (resolved) root. Then, as Triton
// lays out a SageMaker artefact: a config.pbtxt directly in the URL makes
// the URL's directory the model and its parent the repository; otherwise
// the URL is the repository and the model is its only sub-directory or,
// with several, the one ensemble among them.
func resolveModelURL(root, rawURL string) (modelLocation, error) {
	var none modelLocation
	if rawURL == "" {
		return none, inference.InvalidArg("failed to load model: 'url' must not be empty")
	}
	if strings.ContainsRune(rawURL, 0) {
		return none, inference.InvalidArg("failed to load model: 'url' contains a NUL byte")
	}
	if !filepath.IsAbs(rawURL) {
		return none, inference.InvalidArg("failed to load model: url '%s' must be an absolute path", rawURL)
	}
	for _, seg := range strings.Split(rawURL, "/") {
		if seg == ".." {
			return none, inference.InvalidArg("failed to load model: url '%s' must not contain '..'", rawURL)
		}
	}
	clean := filepath.Clean(rawURL)
	if err := checkSystemDir(rawURL, clean); err != nil {
		return none, err
	}
	root = filepath.Clean(root)
	shape := fmt.Sprintf("%s/<model_name>/model[/<subdir>]", strings.TrimSuffix(root, "/"))
	if !underDir(clean, root) || clean == root {
		return none, inference.InvalidArg("failed to load model: url '%s' is not of the form %s", rawURL, shape)
	}
	rel := strings.Split(strings.TrimPrefix(clean[len(root):], "/"), "/")
	if len(rel) < 2 || len(rel) > 3 || rel[1] != "model" {
		return none, inference.InvalidArg("failed to load model: url '%s' is not of the form %s", rawURL, shape)
	}

	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return none, inference.InvalidArg("failed to load model: the model root '%s' cannot be read: %v", root, pathErr(err))
	}
	resolved, err := filepath.EvalSymlinks(clean)
	if err != nil {
		return none, inference.InvalidArg("failed to load model: url '%s' cannot be read: %v", rawURL, pathErr(err))
	}
	if !underDir(resolved, realRoot) || resolved == realRoot {
		return none, inference.InvalidArg("failed to load model: url '%s' resolves to '%s', outside the model root '%s'", rawURL, resolved, root)
	}
	if err := checkSystemDir(rawURL, resolved); err != nil {
		return none, err
	}
	st, err := os.Stat(resolved)
	if err != nil {
		return none, inference.InvalidArg("failed to load model: url '%s' cannot be read: %v", rawURL, pathErr(err))
	}
	if !st.IsDir() {
		return none, inference.InvalidArg("failed to load model: url '%s' is not a directory", rawURL)
	}

	if isFile(filepath.Join(resolved, "config.pbtxt")) {
		parent := filepath.Dir(resolved)
		if !underDir(parent, realRoot) || parent == realRoot {
			return none, inference.InvalidArg("failed to load model: url '%s' resolves to '%s', whose repository would be the model root", rawURL, resolved)
		}
		return modelLocation{repo: parent, subdir: filepath.Base(resolved)}, nil
	}
	sub, err := pickModelDir(resolved)
	if err != nil {
		return none, inference.InvalidArg("failed to load model from url '%s': %v", rawURL, err)
	}
	return modelLocation{repo: resolved, subdir: sub}, nil
}

func checkSystemDir(rawURL, path string) error {
	for _, d := range systemDirs {
		if underDir(path, d) {
			return inference.InvalidArg("failed to load model: url '%s' must not point under %s", rawURL, d)
		}
	}
	return nil
}

// pathErr drops the path an *fs.PathError repeats: the message names it
// already.
func pathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func isFile(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}

// pickModelDir returns the model sub-directory of a repository that has
// no config.pbtxt of its own: its only one, or the one ensemble.
func pickModelDir(repo string) (string, error) {
	entries, err := os.ReadDir(repo)
	if err != nil {
		return "", pathErr(err)
	}
	var dirs []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if st, err := os.Stat(filepath.Join(repo, e.Name())); err == nil && st.IsDir() {
			dirs = append(dirs, e.Name())
		}
	}
	switch len(dirs) {
	case 0:
		return "", errors.New("it has neither a config.pbtxt nor a model directory")
	case 1:
		return dirs[0], nil
	}
	var ensembles []string
	for _, d := range dirs {
		if isEnsemble(filepath.Join(repo, d, "config.pbtxt")) {
			ensembles = append(ensembles, d)
		}
	}
	switch len(ensembles) {
	case 1:
		return ensembles[0], nil
	case 0:
		return "", fmt.Errorf("it has %d model directories (%s) and none is an ensemble (platform: \"ensemble\") to serve", len(dirs), strings.Join(dirs, ", "))
	default:
		return "", fmt.Errorf("it has %d ensembles (%s); one artefact serves one model", len(ensembles), strings.Join(ensembles, ", "))
	}
}

// isEnsemble reports whether the configuration file says platform
// "ensemble". A file that does not parse is not one: loading the model
// reports what is wrong with it.
func isEnsemble(configPath string) bool {
	b, err := os.ReadFile(configPath)
	if err != nil {
		return false
	}
	var cfg inferencepb.ModelConfig
	if err := (prototext.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, &cfg); err != nil {
		return false
	}
	return cfg.GetPlatform() == "ensemble"
}
