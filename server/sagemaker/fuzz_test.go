package sagemaker

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nereid-project/nereid/inference"
)

// FuzzJSONHeaderSize checks that any Content-Type parses without a panic
// and that an accepted size is one the value spelled.
func FuzzJSONHeaderSize(f *testing.F) {
	for _, s := range []string{"", "application/json", binaryContentType(12), binaryMediaType, binaryMediaType + `;json-header-size="7"`, binaryMediaType + ";;=;json-header-size=-0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ct string) {
		n, binary, err := jsonHeaderSize([]byte(ct))
		if err != nil && (!binary || inference.CodeOf(err) != inference.CodeInvalidArg) {
			t.Fatalf("%q: %v (binary %v)", ct, err, binary)
		}
		if n < 0 {
			t.Fatalf("%q: negative size %d", ct, n)
		}
	})
}

// FuzzParseLoadRequest checks that any POST /models body parses or is
// refused as an invalid argument.
func FuzzParseLoadRequest(f *testing.F) {
	for _, s := range []string{`{"model_name":"a","url":"/opt/ml/models/a/model"}`, `{}`, `{"model_name":1}`, `[`, ``, `{"url":"\u0000"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if _, err := parseLoadRequest(body); err != nil && inference.CodeOf(err) != inference.CodeInvalidArg {
			t.Fatalf("%q: %v", body, err)
		}
	})
}

// FuzzResolveModelURL checks the URL rules against a root with a model, a
// symlink out of it and one into it: an accepted URL always resolves to a
// repository strictly inside the root, whatever the input.
func FuzzResolveModelURL(f *testing.F) {
	base := f.TempDir()
	root := filepath.Join(base, "models")
	for _, dir := range []string{filepath.Join(root, "h", "model", "m", "1"), filepath.Join(base, "out", "model")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			f.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(base, "out", "model", "config.pbtxt"), nil, 0o644); err != nil {
		f.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "e"), 0o755); err != nil {
		f.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(base, "out", "model"), filepath.Join(root, "e", "model")); err != nil {
		f.Fatal(err)
	}
	if err := os.Symlink(root, filepath.Join(root, "loop")); err != nil {
		f.Fatal(err)
	}
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"/h/model", "/e/model", "/loop/h/model", "/h/model/m", "/../out/model", "/h/./model", "//h//model", "/h/model/m/1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rel string) {
		url := root + rel
		loc, err := resolveModelURL(root, url)
		if err != nil {
			if inference.CodeOf(err) != inference.CodeInvalidArg {
				t.Fatalf("%q: %v", url, err)
			}
			return
		}
		if !strings.HasPrefix(loc.repo, realRoot+"/") || strings.Contains(loc.subdir, "/") || loc.subdir == "" || loc.subdir == ".." {
			t.Fatalf("%q accepted as %+v, outside %s", url, loc, realRoot)
		}
	})
}
