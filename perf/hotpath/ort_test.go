//go:build cgo

package hotpath

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/backends/onnxruntime"
)

// The onnxruntime backend, registered as cmd/nereid registers it; the
// library is where `make ort` puts it or $NEREID_ORT_LIBRARY.
var ortBackend = onnxruntime.New(onnxruntime.Options{})

func init() {
	backends.Register(onnxruntime.Name, ortBackend)
	in := func(name string) input {
		data := make([]byte, 4*16)
		for i := range data {
			data[i] = byte(i % 7)
		}
		return input{name, "INT32", []int64{1, 16}, data}
	}
	cases = append(cases, benchCase{
		name: "simple", model: "simple",
		inputs:  []input{in("INPUT0"), in("INPUT1")},
		outputs: []string{"OUTPUT0", "OUTPUT1"},
		repo:    ortRepo("simple"),
	}, benchCase{
		// The ONNX identity model: ONNX Runtime's share of a request that
		// computes nothing, next to the identity backend's case above.
		name: "onnx_identity_fp32/elems=256", model: "identity_fp32",
		inputs:  []input{{"INPUT0", "FP32", []int64{1, 256}, fp32s(256)}},
		outputs: []string{"OUTPUT0"},
		repo:    ortRepo("identity_fp32"),
	})
}

// ortRepo links model_repo_examples/<model> (an ONNX model) into the
// repository, or skips when the ONNX Runtime library is missing.
func ortRepo(model string) func(b *testing.B, dir string) {
	return func(b *testing.B, dir string) {
		_, here, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(here), "..", "..")
		lib := os.Getenv("NEREID_ORT_LIBRARY")
		if lib == "" {
			lib = filepath.Join(root, ".ort", "lib", "libonnxruntime.so.1")
		}
		if _, err := os.Stat(lib); err != nil {
			b.Skipf("no ONNX Runtime library (%v): run make ort or set NEREID_ORT_LIBRARY", err)
		}
		ortBackend.Configure(onnxruntime.Options{LibraryPaths: []string{lib}, DefaultMaxBatchSize: -1})
		if err := os.Symlink(filepath.Join(root, "model_repo_examples", model), filepath.Join(dir, model)); err != nil {
			b.Fatal(err)
		}
	}
}
