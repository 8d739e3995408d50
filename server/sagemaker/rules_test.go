package sagemaker

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nereid-project/nereid/inference"
)

func TestJSONHeaderSize(t *testing.T) {
	tests := []struct {
		ct     string
		n      int
		binary bool
		err    string // substring; "" for none
	}{
		{"", 0, false, ""},
		{"application/json", 0, false, ""},
		{"application/json; charset=utf-8", 0, false, ""},
		{"application/octet-stream", 0, false, ""},
		{"application/vnd.sagemaker-triton.binary+json;json-header-size=123", 123, true, ""},
		{"application/vnd.sagemaker-triton.binary+json; json-header-size=0", 0, true, ""},
		{"Application/VND.SageMaker-Triton.Binary+JSON ; charset=x ; JSON-Header-Size = 7 ", 7, true, ""},
		{`application/vnd.sagemaker-triton.binary+json;json-header-size="42"`, 42, true, ""},
		{"application/vnd.sagemaker-triton.binary+json", 0, true, "needs a json-header-size parameter"},
		{"application/vnd.sagemaker-triton.binary+json;charset=utf-8", 0, true, "needs a json-header-size parameter"},
		{"application/vnd.sagemaker-triton.binary+json;json-header-size=", 0, true, "must be a non-negative integer"},
		{"application/vnd.sagemaker-triton.binary+json;json-header-size=-1", 0, true, "must be a non-negative integer"},
		{"application/vnd.sagemaker-triton.binary+json;json-header-size=+1", 0, true, "must be a non-negative integer"},
		{"application/vnd.sagemaker-triton.binary+json;json-header-size=1e3", 0, true, "must be a non-negative integer"},
		{"application/vnd.sagemaker-triton.binary+json;json-header-size=99999999999999999999", 0, true, "must be a non-negative integer"},
	}
	for _, tc := range tests {
		n, binary, err := jsonHeaderSize([]byte(tc.ct))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || inference.CodeOf(err) != inference.CodeInvalidArg {
				t.Errorf("%q: err %v, want one containing %q", tc.ct, err, tc.err)
			}
			continue
		}
		if err != nil || n != tc.n || binary != tc.binary {
			t.Errorf("%q: %d %v %v, want %d %v", tc.ct, n, binary, err, tc.n, tc.binary)
		}
	}
	if got := binaryContentType(17); got != "application/vnd.sagemaker-triton.binary+json;json-header-size=17" {
		t.Errorf("binaryContentType: %q", got)
	}
}

func TestHTTPStatus(t *testing.T) {
	oom := inference.Internal("onnxruntime: Failed to allocate: CUDA out of memory")
	tests := []struct {
		ep   endpoint
		err  error
		want int
	}{
		{epInvocations, inference.NotFound("unknown model"), 404},
		{epInvocations, inference.Unavailable("not ready"), 503},
		{epInvocations, inference.Unsupported("decoupled"), 501},
		{epInvocations, inference.InvalidArg("bad input"), 400},
		{epInvocations, inference.Internal("the model raised"), 400},
		{epInvocations, errors.New("plain"), 400},
		{epInvocations, oom, 507},
		{epInvocations, inference.ResourceExhausted("no room"), 507},
		{epInvoke, inference.NotFound("unknown model"), 400},
		{epInvoke, inference.Unavailable("not ready"), 400},
		{epInvoke, inference.Unsupported("decoupled"), 400},
		{epInvoke, inference.Internal("python: MemoryError"), 507},
		{epLoad, inference.Errorf(inference.CodeAlreadyExists, "taken"), 409},
		{epLoad, inference.ResourceExhausted("the model cache budget is full"), 507},
		{epLoad, inference.Internal("failed to load 'x': OOM while building the session"), 507},
		{epLoad, inference.Internal("failed to load 'x': No space left on device"), 507},
		{epLoad, inference.Internal("failed to load 'x': bad config"), 400},
		{epLoad, inference.NotFound("no such model"), 400},
		{epLoad, inference.Internal("failed to load 'BLOOM': bad config"), 400},
		{epUnload, inference.NotFound("not loaded"), 404},
		{epUnload, inference.Internal("out of memory"), 400},
		{epUnload, inference.Unavailable("timed out"), 400},
	}
	for _, tc := range tests {
		if got := httpStatus(tc.ep, tc.err); got != tc.want {
			t.Errorf("endpoint %d, %q: %d, want %d", tc.ep, tc.err, got, tc.want)
		}
	}
}

func TestOutOfMemory(t *testing.T) {
	for msg, want := range map[string]bool{
		"OOM":                              true,
		"killed: OOM.":                     true,
		"(OOM)":                            true,
		"CUBLAS_STATUS_ALLOC_FAILED":       true,
		"std::bad_alloc":                   true,
		"BLOOM failed":                     false,
		"OOMPH":                            false,
		"model_OOM_x":                      false,
		"room for improvement":             false,
		"failed to load: invalid argument": false,
	} {
		if got := outOfMemory(msg); got != want {
			t.Errorf("outOfMemory(%q) = %v, want %v", msg, got, want)
		}
	}
}

func TestCheckModelName(t *testing.T) {
	for _, ok := range []string{"abc", "0ddc2d4d8f", "my model", "a.b"} {
		if err := checkModelName("model_name", ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "a/b", `a\b`, "a..b", "x\x00", "  "} {
		if err := checkModelName("model_name", bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// writeConfig writes dir/config.pbtxt (and dir/1/) with the given
// platform line.
func writeConfig(t *testing.T, dir, name, platform string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "1"), 0o755); err != nil {
		t.Fatal(err)
	}
	text := "name: \"" + name + "\"\n"
	if platform != "" {
		text += "platform: \"" + platform + "\"\n"
	} else {
		text += "backend: \"identity\"\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "config.pbtxt"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestResolveModelURL(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "models")
	outside := filepath.Join(base, "outside")
	// single: config.pbtxt directly in the URL.
	writeConfig(t, filepath.Join(root, "single", "model"), "m", "")
	// one: the URL holds one model directory.
	writeConfig(t, filepath.Join(root, "one", "model", "only"), "only", "")
	// ens: an ensemble and its step.
	writeConfig(t, filepath.Join(root, "ens", "model", "pipeline"), "pipeline", "ensemble")
	writeConfig(t, filepath.Join(root, "ens", "model", "step"), "step", "")
	// two: two models, no ensemble.
	writeConfig(t, filepath.Join(root, "two", "model", "a"), "a", "")
	writeConfig(t, filepath.Join(root, "two", "model", "b"), "b", "")
	// twoens: two ensembles.
	writeConfig(t, filepath.Join(root, "twoens", "model", "a"), "a", "ensemble")
	writeConfig(t, filepath.Join(root, "twoens", "model", "b"), "b", "ensemble")
	// corrupt: an unparsable config among two: not taken for an ensemble.
	writeConfig(t, filepath.Join(root, "corrupt", "model", "a"), "a", "ensemble")
	if err := os.MkdirAll(filepath.Join(root, "corrupt", "model", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "corrupt", "model", "b", "config.pbtxt"), []byte("platform: {{{"), 0o644); err != nil {
		t.Fatal(err)
	}
	// empty: no model at all.
	if err := os.MkdirAll(filepath.Join(root, "empty", "model"), 0o755); err != nil {
		t.Fatal(err)
	}
	// sub: a sub-directory of model with its config.
	writeConfig(t, filepath.Join(root, "sub", "model", "inner"), "inner", "")
	// Symlinks: one escaping the root, one staying inside it.
	writeConfig(t, filepath.Join(outside, "model"), "evil", "")
	if err := os.MkdirAll(filepath.Join(root, "escape"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "model"), filepath.Join(root, "escape", "model")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "inlink"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "single", "model"), filepath.Join(root, "inlink", "model")); err != nil {
		t.Fatal(err)
	}
	// A symlinked root is resolved too.
	linkRoot := filepath.Join(base, "rootlink")
	if err := os.Symlink(root, linkRoot); err != nil {
		t.Fatal(err)
	}
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		t.Fatal(err)
	}

	ok := []struct {
		root, url    string
		repo, subdir string
	}{
		{root, root + "/single/model", realRoot + "/single", "model"},
		{root, root + "/single/model/", realRoot + "/single", "model"},
		{root, root + "/one/model", realRoot + "/one/model", "only"},
		{root, root + "/ens/model", realRoot + "/ens/model", "pipeline"},
		{root, root + "/corrupt/model", realRoot + "/corrupt/model", "a"},
		{root, root + "/sub/model/inner", realRoot + "/sub/model", "inner"},
		{root, root + "/inlink/model", realRoot + "/single", "model"},
		{linkRoot, linkRoot + "/single/model", realRoot + "/single", "model"},
	}
	for _, tc := range ok {
		loc, err := resolveModelURL(tc.root, tc.url)
		if err != nil || loc.repo != tc.repo || loc.subdir != tc.subdir {
			t.Errorf("%s: %+v, %v; want repo %s, model %s", tc.url, loc, err, tc.repo, tc.subdir)
		}
	}

	bad := []struct {
		url, want string
	}{
		{"", "must not be empty"},
		{"models/single/model", "must be an absolute path"},
		{root + "/single/../single/model", "must not contain '..'"},
		{root + "/../outside/model", "must not contain '..'"},
		{"/dev/shm/x/model", "must not point under /dev"},
		{"/proc/1/model", "must not point under /proc"},
		{"/sys/x/model", "must not point under /sys"},
		{outside + "/model", "is not of the form"},
		{root, "is not of the form"},
		{root + "/single", "is not of the form"},
		{root + "/single/other", "is not of the form"},
		{root + "/sub/model/inner/1", "is not of the form"},
		{root + "/missing/model", "cannot be read"},
		{root + "/escape/model", "outside the model root"},
		{root + "/two/model", "none is an ensemble"},
		{root + "/twoens/model", "2 ensembles"},
		{root + "/empty/model", "neither a config.pbtxt nor a model directory"},
		{root + "/single/model\x00", "NUL"},
	}
	for _, tc := range bad {
		loc, err := resolveModelURL(root, tc.url)
		if err == nil || !strings.Contains(err.Error(), tc.want) || inference.CodeOf(err) != inference.CodeInvalidArg {
			t.Errorf("%q: %+v, %v; want an invalid-argument error containing %q", tc.url, loc, err, tc.want)
		}
	}
}
