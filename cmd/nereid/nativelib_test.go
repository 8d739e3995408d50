//go:build cgo

package main

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestNativeLibraryCandidates(t *testing.T) {
	lib := nativeLibrary{backend: "tensorflow", env: "NEREID_TEST_LIBRARY", rel: filepath.Join(".tf", "lib", "x.so")}
	c := &config{backendConfig: map[string]map[string]string{"tensorflow": {"library": "/flag/x.so"}}}
	t.Setenv("NEREID_TEST_LIBRARY", "/env/x.so")
	if paths, src := lib.candidates(c); len(paths) != 1 || paths[0] != "/flag/x.so" || src != "--backend-config=tensorflow,library" {
		t.Fatalf("flag: %v %s", paths, src)
	}
	c.backendConfig = map[string]map[string]string{}
	if paths, src := lib.candidates(c); len(paths) != 1 || paths[0] != "/env/x.so" || src != "NEREID_TEST_LIBRARY" {
		t.Fatalf("env: %v %s", paths, src)
	}
	t.Setenv("NEREID_TEST_LIBRARY", "")
	paths, src := lib.candidates(c)
	// Next to the binary (bin/../.tf), then in the working directory.
	if len(paths) != 2 || !filepath.IsAbs(paths[0]) || !strings.HasSuffix(paths[0], lib.rel) || paths[1] != lib.rel || src != "the default locations" {
		t.Fatalf("defaults: %v %s", paths, src)
	}
}

func TestDefaultMaxBatchSize(t *testing.T) {
	c := &config{backendConfig: map[string]map[string]string{"": {"default-max-batch-size": "6"}}}
	if n, err := defaultMaxBatchSize(c, "tensorflow", 4); err != nil || n != 6 {
		t.Fatalf("global: %d %v", n, err)
	}
	c.backendConfig["tensorflow"] = map[string]string{"default-max-batch-size": "2"}
	if n, err := defaultMaxBatchSize(c, "tensorflow", 4); err != nil || n != 2 {
		t.Fatalf("per backend: %d %v", n, err)
	}
	if n, err := defaultMaxBatchSize(c, "onnxruntime", 4); err != nil || n != 6 {
		t.Fatalf("another backend: %d %v", n, err)
	}
	c.backendConfig["tensorflow"]["default-max-batch-size"] = "-1"
	if _, err := defaultMaxBatchSize(c, "tensorflow", 4); err == nil || !strings.Contains(err.Error(), "--backend-config=tensorflow,default-max-batch-size") {
		t.Fatalf("bad value: %v", err)
	}
}
