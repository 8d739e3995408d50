package repository

import (
	"crypto/md5" //nolint:gosec // the checksum agent's algorithm is MD5, as in Triton's configurations
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// agentChecksum is the one repository agent Nereid has built in.
const agentChecksum = "checksum"

// runAgents applies a configuration's model_repository_agents to the
// model's directory before any of its versions loads, in the order they
// are listed, as Triton's repository agents act at load. Nereid loads no
// agent libraries: the checksum agent is built in, any other is refused
// by name, so a model that relies on one never loads without it.
func runAgents(cfg *inferencepb.ModelConfig, modelDir string) error {
	for _, a := range cfg.GetModelRepositoryAgents().GetAgents() {
		if a.GetName() != agentChecksum {
			return inference.Unsupported("repository agent '%s' of model '%s' is not supported by Nereid (it has the '%s' agent built in and loads no agent libraries)",
				a.GetName(), cfg.GetName(), agentChecksum)
		}
		if err := verifyChecksums(modelDir, a.GetParameters()); err != nil {
			return err
		}
	}
	return nil
}

// verifyChecksums is the checksum agent: each parameter's key is
// "ALGORITHM:path", the path relative to the model directory, and its
// value the file's expected digest in lowercase hex. MD5 is the only
// algorithm, as in Triton's agent; the texts of its refusals are that
// agent's. Unlike it, a path that leaves the model directory is refused.
func verifyChecksums(modelDir string, params map[string]string) error {
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	slices.Sort(keys) // a map: check in a fixed order, so the same file fails first
	for _, key := range keys {
		algo, rel, ok := strings.Cut(key, ":")
		if !ok {
			return inference.InvalidArg("failed to parse key: %s", key)
		}
		if !strings.EqualFold(algo, "md5") {
			return inference.Unsupported("Unsupported checksum algorithm: %s", algo)
		}
		if !filepath.IsLocal(rel) {
			return inference.InvalidArg("checksum agent: file '%s' is not inside the model directory", rel)
		}
		got, err := md5File(filepath.Join(modelDir, rel))
		if err != nil {
			return inference.InvalidArg("failed to open text file for read %s: %w", rel, err)
		}
		if want := params[key]; got != want {
			return inference.InvalidArg("Mismatched MD5 hash for file %s, expect: %s, got: %s", rel, want, got)
		}
	}
	return nil
}

// md5File digests a file as it streams by.
func md5File(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", unwrapPath(err)
	}
	defer f.Close()
	h := md5.New() //nolint:gosec // see the import
	if _, err := io.Copy(h, f); err != nil {
		return "", unwrapPath(err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// unwrapPath drops the path from an os error (the message names the file
// relative to the model directory already).
func unwrapPath(err error) error {
	if pe, ok := err.(*os.PathError); ok { //nolint:errorlint // os.Open and Read return *PathError itself
		return fmt.Errorf("%w", pe.Err)
	}
	return err
}
