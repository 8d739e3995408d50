package modelmesh

import (
	"path/filepath"
	"strings"
	"testing"
)

// FuzzRequestFields feeds the checks of a request's modelId and modelPath
// and the modelKey parser with arbitrary text: none panics, and what
// passes the checks can name a model and be a local directory.
func FuzzRequestFields(f *testing.F) {
	f.Add("simple__isvc-1", "/models/simple__isvc-1/", `{"model_type":{"name":"triton"},"disk_size_bytes":2415}`)
	f.Add("", "relative", "not json")
	f.Add("..", "/proc/self", `{"disk_size_bytes":-1}`)
	f.Add("a/b", "/dev/../tmp", `{"disk_size_bytes":"12"}`)
	f.Add(" ", "/x\x00", `{"disk_size_bytes":1e30}`)
	f.Fuzz(func(t *testing.T, id, path, key string) {
		if checkModelID(id) == nil {
			if id == "" || strings.TrimSpace(id) == "" || strings.Contains(id, "..") || strings.ContainsAny(id, "/\\\x00") {
				t.Errorf("checkModelID accepted %q", id)
			}
		}
		if checkModelPath(path) == nil {
			clean := filepath.Clean(path)
			if !filepath.IsAbs(path) || strings.ContainsRune(path, 0) ||
				strings.HasPrefix(clean+"/", "/proc/") || strings.HasPrefix(clean+"/", "/sys/") || strings.HasPrefix(clean+"/", "/dev/") {
				t.Errorf("checkModelPath accepted %q", path)
			}
		}
		if k := parseModelKey(key); k.diskSize < 0 {
			t.Errorf("parseModelKey(%q) = %d", key, k.diskSize)
		}
	})
}
