package asyncinfer

import (
	"net/url"
	"strings"
	"testing"
)

// FuzzParseRoute: any path maps to at most one endpoint, and what it
// names is safe to use: ids are file names, versions digits.
func FuzzParseRoute(f *testing.F) {
	for _, p := range []string{
		"/v2/models/simple/infer", "/v2/models/a%2Fb/versions/3/infer", "/v2/models//infer",
		requestsPath + newID(), resultsPath + newID(), resultsPath + "../x", "/v2/models/m/versions/x/infer",
	} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, path string) {
		r := parseRoute(path)
		switch r.kind {
		case routeRequest, routeResult:
			if !validID(r.id) || strings.ContainsAny(r.id, "/.") {
				t.Fatalf("%q: id %q", path, r.id)
			}
		case routeSubmit:
			if r.model == "" || (r.version != "" && !digits(r.version)) {
				t.Fatalf("%q: %+v", path, r)
			}
			if !strings.HasSuffix(path, "/infer") {
				t.Fatalf("%q routed to submit", path)
			}
		case routeNotFound:
		}
	})
}

// FuzzCheckWebhook: an accepted webhook is an absolute http(s) URL.
func FuzzCheckWebhook(f *testing.F) {
	for _, u := range []string{"http://h/x", "https://h:8443/a?b=c", "ftp://h", "/rel", "http://", "javascript:alert(1)"} {
		f.Add(u)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got, err := checkWebhook(raw)
		if err != nil || got == "" {
			return
		}
		u, perr := url.Parse(got)
		if perr != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || len(raw) > maxWebhookURL {
			t.Fatalf("%q accepted as %q", raw, got)
		}
	})
}
