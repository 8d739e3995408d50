//go:build cgo

package tensorflow

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

// libraryEnv is set by `make test` to the library `make tf` installed;
// with it set, a missing library fails the tests instead of skipping them.
const libraryEnv = "NEREID_TF_LIBRARY"

// examples is the example repository, whose TensorFlow models the tests use.
const examples = "../../model_repo_examples"

// TestMain quiets TensorFlow's informational logs, as cmd/nereid does.
func TestMain(m *testing.M) {
	if _, set := os.LookupEnv("TF_CPP_MIN_LOG_LEVEL"); !set {
		_ = os.Setenv("TF_CPP_MIN_LOG_LEVEL", "2")
	}
	os.Exit(m.Run())
}

// defaultLibrary is where `make tf` puts the library, from this package.
var defaultLibrary = filepath.Join("..", "..", ".tf", "lib", "libtensorflow_cc.so.2")

// testLibrary returns the library the tests load, or skips the test when
// it is not installed and the Makefile did not ask for it.
func testLibrary(t testing.TB) string {
	t.Helper()
	path := os.Getenv(libraryEnv)
	if path == "" {
		path = defaultLibrary
		if _, err := os.Stat(path); err != nil {
			t.Skipf("TensorFlow library not found at %s: run `make tf` (or set %s) to run the TensorFlow tests", path, libraryEnv)
		}
	} else if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s=%s: %v (`make tf` installs the library)", libraryEnv, path, err)
	}
	return path
}

// testBackend returns a backend that uses the test library.
func testBackend(t testing.TB) *Backend {
	t.Helper()
	b := New(Options{LibraryPaths: []string{testLibrary(t)}, LibrarySource: libraryEnv, DefaultMaxBatchSize: -1, Logger: zerolog.Nop()})
	if err := b.ensureLibrary(); err != nil {
		t.Fatal(err)
	}
	return b
}

func parseConfig(t testing.TB, text string) *inferencepb.ModelConfig {
	t.Helper()
	cfg := &inferencepb.ModelConfig{}
	if err := prototext.Unmarshal([]byte(text), cfg); err != nil {
		t.Fatalf("config: %v\n%s", err, text)
	}
	return cfg
}

func exampleConfig(t testing.TB, name string) *inferencepb.ModelConfig {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(examples, name, "config.pbtxt"))
	if err != nil {
		t.Fatal(err)
	}
	return parseConfig(t, string(data))
}

// loadModel loads version 1 of a model and builds one CPU instance.
func loadModel(t testing.TB, b *Backend, modelDir string, cfg *inferencepb.ModelConfig) *instance {
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
	return inst
}

func tryLoad(b *Backend, modelDir string, cfg *inferencepb.ModelConfig) (*model, *instance, error) {
	ctx := context.Background()
	if cfg.GetDefaultModelFilename() == "" {
		if cfg.GetPlatform() == platformSavedModel {
			cfg.DefaultModelFilename = fileSavedModel
		} else {
			cfg.DefaultModelFilename = fileGraphDef
		}
	}
	if err := b.Complete(ctx, modelDir, cfg, true); err != nil {
		return nil, nil, err
	}
	bm, err := b.Load(ctx, backends.ModelSpec{
		Name: cfg.GetName(), Version: 1, ModelDir: modelDir, VersionDir: filepath.Join(modelDir, "1"),
		Config: cfg, Logger: zerolog.Nop(),
	})
	if err != nil {
		return nil, nil, err
	}
	m := bm.(*model)
	bi, err := m.NewInstance(ctx, backends.InstanceSpec{Name: cfg.GetName() + "_0", Kind: inferencepb.ModelInstanceGroup_KIND_CPU})
	if err != nil {
		_ = m.Close()
		return nil, nil, err
	}
	u, _ := backends.UnwrapUnary(bi)
	return m, u.(*instance), nil
}

// modelDirWith makes a model directory whose version 1 holds a testdata
// model (a file or a SavedModel directory) under the name file.
func modelDirWith(t testing.TB, testdataModel, file string) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join("testdata", "models", testdataModel)
	dst := filepath.Join(dir, "1", file)
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		// A file, not a directory.
		data, rerr := os.ReadFile(src)
		if rerr != nil {
			t.Fatal(rerr)
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			t.Fatal(err)
		}
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

func execute(t testing.TB, inst *instance, batch ...*inference.Request) []*inference.Response {
	t.Helper()
	resps, _, err := inst.ExecuteWithPhases(context.Background(), batch)
	if err != nil {
		t.Fatal(err)
	}
	return resps
}
