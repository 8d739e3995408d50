package repository

import (
	"context"
	"crypto/md5" //nolint:gosec // the checksum agent's algorithm
	"encoding/hex"
	"path/filepath"
	"testing"

	"github.com/nereid-project/nereid/inference"
)

// TestChecksumAgent loads models through a real Manager whose
// configurations carry the checksum agent: a matching digest loads, every
// refusal leaves the model unloaded with a reason naming the problem.
func TestChecksumAgent(t *testing.T) {
	repo := t.TempDir()
	sum := md5.Sum([]byte("weights")) //nolint:gosec // see the import
	good := hex.EncodeToString(sum[:])
	agent := func(params string) string {
		return `backend: "fake" model_repository_agents { agents [ { name: "checksum" parameters [ ` + params + ` ] } ] }`
	}
	models := []struct {
		name, cfg string
		code      inference.Code // of the load's error (a failed load is INVALID_ARG, as Triton's); 0: loads
		want      string
	}{
		{"ok", agent(`{ key: "MD5:1/model.bin" value: "` + good + `" }, { key: "md5:extra.txt" value: "` + good + `" }`), 0, ""},
		{"mismatch", agent(`{ key: "MD5:1/model.bin" value: "00000000000000000000000000000000" }`), inference.CodeInvalidArg,
			"Mismatched MD5 hash for file 1/model.bin, expect: 00000000000000000000000000000000, got: " + good},
		{"no_algorithm", agent(`{ key: "1/model.bin" value: "` + good + `" }`), inference.CodeInvalidArg, "failed to parse key: 1/model.bin"},
		{"sha", agent(`{ key: "SHA256:1/model.bin" value: "` + good + `" }`), inference.CodeInvalidArg, "Unsupported checksum algorithm: SHA256"},
		{"missing", agent(`{ key: "MD5:1/absent.bin" value: "` + good + `" }`), inference.CodeInvalidArg,
			"failed to open text file for read 1/absent.bin: no such file or directory"},
		{"escape", agent(`{ key: "MD5:../ok/extra.txt" value: "` + good + `" }`), inference.CodeInvalidArg,
			"checksum agent: file '../ok/extra.txt' is not inside the model directory"},
		{"other_agent", `backend: "fake" model_repository_agents { agents [ { name: "decrypt" } ] }`, inference.CodeInvalidArg,
			"repository agent 'decrypt' of model 'other_agent' is not supported by Nereid"},
	}
	for _, m := range models {
		dir := writeModel(t, repo, m.name, m.cfg, 1)
		mustWrite(t, filepath.Join(dir, "1", "model.bin"), "weights")
		mustWrite(t, filepath.Join(dir, "extra.txt"), "weights")
	}
	loader := newFakeLoader()
	mgr := newManager(t, loader, ModeExplicit, repo)
	for _, m := range models {
		t.Run(m.name, func(t *testing.T) {
			err := mgr.Load(context.Background(), m.name, LoadOptions{})
			if m.code == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantErr(t, err, m.code, "load failed for model '"+m.name+"'", m.want)
			if e, _ := entry(mgr, m.name, ""); e.State != StateUnavailable {
				t.Errorf("index entry %+v", e)
			}
		})
	}
	if len(loader.loads) != 1 || loader.loads[0].Name != "ok" {
		t.Errorf("versions loaded: %+v, want only ok's", loader.loads)
	}
}
