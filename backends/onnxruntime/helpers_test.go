//go:build cgo

package onnxruntime

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/encoding/prototext"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// libraryEnv is set by `make test` to the library `make ort` installed;
// with it set, a missing library fails the tests instead of skipping them.
const libraryEnv = "NEREID_ORT_LIBRARY"

// examples is the example repository, whose ONNX models the tests use.
const examples = "../../model_repo_examples"

// testBackend returns a backend that uses the test library, or skips the
// test when the library is not installed and the Makefile did not ask for
// it.
func testBackend(t testing.TB) *Backend {
	t.Helper()
	path := os.Getenv(libraryEnv)
	if path == "" {
		path = filepath.Join("..", "..", ".ort", "lib", "libonnxruntime.so.1")
		if _, err := os.Stat(path); err != nil {
			t.Skipf("ONNX Runtime library not found at %s: run `make ort` (or set %s) to run the ONNX Runtime tests", path, libraryEnv)
		}
	} else if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s=%s: %v (`make ort` installs the library)", libraryEnv, path, err)
	}
	b := New(Options{LibraryPaths: []string{path}, LibrarySource: libraryEnv, DefaultMaxBatchSize: -1, Logger: zerolog.Nop()})
	if _, err := b.ensureRuntime(); err != nil {
		t.Fatal(err)
	}
	return b
}

// parseConfig parses config.pbtxt text.
func parseConfig(t testing.TB, text string) *inferencepb.ModelConfig {
	t.Helper()
	cfg := &inferencepb.ModelConfig{}
	if err := prototext.Unmarshal([]byte(text), cfg); err != nil {
		t.Fatalf("config: %v\n%s", err, text)
	}
	return cfg
}

// exampleConfig reads an example model's configuration.
func exampleConfig(t testing.TB, name string) *inferencepb.ModelConfig {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(examples, name, "config.pbtxt"))
	if err != nil {
		t.Fatal(err)
	}
	return parseConfig(t, string(data))
}

// loadModel loads version 1 of a model and builds one CPU instance.
func loadModel(t testing.TB, b *Backend, modelDir string, cfg *inferencepb.ModelConfig) (*model, *instance) {
	t.Helper()
	m, inst, err := tryLoad(b, modelDir, cfg)
	if err != nil {
		t.Fatalf("load %s: %v", cfg.GetName(), err)
	}
	t.Cleanup(func() {
		if err := inst.Close(); err != nil {
			t.Error(err)
		}
		if err := m.Close(); err != nil {
			t.Error(err)
		}
	})
	return m, inst
}

func tryLoad(b *Backend, modelDir string, cfg *inferencepb.ModelConfig) (*model, *instance, error) {
	ctx := context.Background()
	bm, err := b.Load(ctx, backends.ModelSpec{
		Name:       cfg.GetName(),
		Version:    1,
		ModelDir:   modelDir,
		VersionDir: filepath.Join(modelDir, "1"),
		Config:     cfg,
		Logger:     zerolog.Nop(),
	})
	if err != nil {
		return nil, nil, err
	}
	m := bm.(*model)
	kind := inferencepb.ModelInstanceGroup_KIND_CPU
	if len(cfg.GetInstanceGroup()) > 0 {
		kind = cfg.GetInstanceGroup()[0].GetKind()
	}
	bi, err := m.NewInstance(ctx, backends.InstanceSpec{Name: cfg.GetName() + "_0", Kind: kind})
	if err != nil {
		_ = m.Close()
		return nil, nil, err
	}
	u, _ := backends.UnwrapUnary(bi)
	return m, u.(*instance), nil
}

// modelDirWith makes a model directory whose version 1 holds the given
// testdata model as model.onnx.
func modelDirWith(t testing.TB, testdataModel string) string {
	t.Helper()
	dir := t.TempDir()
	data, err := os.ReadFile(filepath.Join("testdata", "models", testdataModel+".onnx"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "1", "model.onnx"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func bytesElems(elems ...string) []byte {
	var out []byte
	for _, e := range elems {
		out = inference.AppendBytesElement(out, []byte(e))
	}
	return out
}

func request(inputs ...inference.Tensor) *inference.Request {
	r := &inference.Request{Inputs: inputs, BatchSize: 1}
	if len(inputs) > 0 && len(inputs[0].Shape) > 0 {
		r.BatchSize = int(inputs[0].Shape[0])
	}
	return r
}
