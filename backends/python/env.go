package python

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// executionEnv returns the interpreter and environment of a model's
// stubs: the EXECUTION_ENV_PATH parameter's environment (a directory, or
// a .tar.gz / .tgz packed environment unpacked once into the cache), else
// the backend's interpreter. "$$TRITON_MODEL_DIRECTORY" in the parameter
// is the model's directory, as Triton has it.
func executionEnv(opts Options, modelDir string, cfg *inferencepb.ModelConfig) (string, []string, error) {
	env := os.Environ()
	p, ok := cfg.GetParameters()["EXECUTION_ENV_PATH"]
	if !ok || p.GetStringValue() == "" {
		return opts.Python, env, nil
	}
	path := strings.ReplaceAll(p.GetStringValue(), "$$TRITON_MODEL_DIRECTORY", modelDir)
	if !filepath.IsAbs(path) {
		path = filepath.Join(modelDir, path)
	}
	st, err := os.Stat(path)
	if err != nil {
		return "", nil, inference.InvalidArg("model '%s': EXECUTION_ENV_PATH '%s': %v", cfg.GetName(), path, err)
	}
	dir := path
	if !st.IsDir() {
		if dir, err = unpackEnv(opts.cacheDir(), path); err != nil {
			return "", nil, inference.InvalidArg("model '%s': EXECUTION_ENV_PATH '%s': %v", cfg.GetName(), path, err)
		}
	}
	python := filepath.Join(dir, "bin", "python3")
	if _, err := os.Stat(python); err != nil {
		python = filepath.Join(dir, "bin", "python")
		if _, err := os.Stat(python); err != nil {
			return "", nil, inference.InvalidArg("model '%s': EXECUTION_ENV_PATH '%s' holds no bin/python3 or bin/python", cfg.GetName(), path)
		}
	}
	// What activating the environment would do.
	env = setEnv(env, "VIRTUAL_ENV", dir)
	env = setEnv(env, "PATH", filepath.Join(dir, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
	env = unsetEnv(env, "PYTHONHOME")
	return python, env, nil
}

func setEnv(env []string, key, value string) []string {
	return append(unsetEnv(env, key), key+"="+value)
}

func unsetEnv(env []string, key string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return out
}

var unpackMu sync.Mutex // one unpacking at a time per process

// unpackEnv unpacks a packed environment into <cache>/python-envs/<hash>,
// once: a later load of the same archive finds it there.
func unpackEnv(cache, archive string) (string, error) {
	if !strings.HasSuffix(archive, ".tar.gz") && !strings.HasSuffix(archive, ".tgz") {
		return "", errors.New("a packed environment must be a .tar.gz or .tgz archive")
	}
	f, err := os.Open(archive)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "python-envs", hex.EncodeToString(h.Sum(nil))[:24])
	unpackMu.Lock()
	defer unpackMu.Unlock()
	if _, err := os.Stat(filepath.Join(dir, ".unpacked")); err == nil {
		return dir, nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".unpack-")
	if err != nil {
		return "", err
	}
	if err := untar(f, tmp); err != nil {
		_ = os.RemoveAll(tmp)
		return "", err
	}
	if err := os.WriteFile(filepath.Join(tmp, ".unpacked"), nil, 0o644); err != nil {
		_ = os.RemoveAll(tmp)
		return "", err
	}
	_ = os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		_ = os.RemoveAll(tmp)
		return "", err
	}
	return dir, nil
}

// untar unpacks a gzip'd tar into dir, refusing entries that would land
// outside it.
func untar(r io.Reader, dir string) error {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return err
	}
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean(hdr.Name)
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, ".."+string(filepath.Separator)) {
			return fmt.Errorf("archive entry '%s' lies outside the environment", hdr.Name)
		}
		target := filepath.Join(dir, name)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(hdr.Mode)&0o777|0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			// A relative link must stay inside the environment; an
			// absolute one is kept (a virtualenv's bin/python points at
			// the interpreter it was made from).
			dest := hdr.Linkname
			if !filepath.IsAbs(dest) {
				dest = filepath.Join(filepath.Dir(target), dest)
			}
			if rel, err := filepath.Rel(dir, dest); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
				if !filepath.IsAbs(hdr.Linkname) {
					return fmt.Errorf("archive link '%s' points outside the environment", hdr.Name)
				}
			}
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			if err := os.Symlink(hdr.Linkname, target); err != nil {
				return err
			}
		}
	}
}
