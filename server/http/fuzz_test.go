package httpfront

import (
	"testing"
)

// FuzzParseRoute checks that routing never panics and that every model
// route names a model.
func FuzzParseRoute(f *testing.F) {
	for _, p := range []string{"/v2", "/v2/models/m/versions/1/infer", "/v2/repository/r/models/m/load", "/v2/systemsharedmemory/region/x/status", "/v2/models/a%2Fb/ready", "//", "/v2/models/%"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, path string) {
		r := parseRoute([]byte(path))
		switch r.kind {
		case routeModelMetadata, routeModelReady, routeModelConfig, routeModelStats, routeModelInfer, routeModelGenerate, routeModelGenerateStream, routeRepoLoad, routeRepoUnload:
			if r.model == "" {
				t.Fatalf("%q routed to %d without a model", path, r.kind)
			}
		default:
		}
		if r.version != "" && !isDigits([]byte(r.version)) {
			t.Fatalf("%q: version %q", path, r.version)
		}
	})
}
