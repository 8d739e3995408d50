package restricted

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nereid-project/nereid/inference"
)

func TestParse(t *testing.T) {
	r := Rules{}
	if err := r.AddHTTP("health,inference:infer-key=infer-value"); err != nil {
		t.Fatal(err)
	}
	if err := r.AddHTTP("model-repository,shared-memory,statistics,trace,logging,model-config,metadata:admin-key=admin-value"); err != nil {
		t.Fatal(err)
	}
	if r[Health] != (Rule{"infer-key", "infer-value"}) || r[Logging] != (Rule{"admin-key", "admin-value"}) || len(r) != 9 {
		t.Errorf("rules %v", r)
	}
	g := Rules{}
	if err := g.AddGRPC("inference:Infer-Key=v"); err != nil {
		t.Fatal(err)
	}
	if g[Inference].Header != "triton-grpc-protocol-infer-key" {
		t.Errorf("gRPC header %q", g[Inference].Header)
	}
	for spec, want := range map[string]string{
		"health":                     "--http-restricted-api option format is '<config name>:<setting>=<value>'. Got health",
		"health:key":                 "option format",
		":k=v":                       "option format",
		"health:k=":                  "option format",
		"healthz:k=v":                "unknown restricted api 'healthz'",
		"inference,metadata:other=v": "restricted api 'inference' can not be specified in multiple config groups",
	} {
		err := r.AddHTTP(spec)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", spec, err, want)
		}
	}
	if err := g.AddGRPC("healthz:k=v"); err == nil || err.Error() != "unknown restricted protocol 'healthz'" {
		t.Errorf("gRPC: %v", err)
	}
}

func TestAllowed(t *testing.T) {
	r := Rules{}
	if err := r.AddHTTP("inference:k=v"); err != nil {
		t.Fatal(err)
	}
	headers := func(h map[string]string) func(string) (string, bool) {
		return func(n string) (string, bool) { v, ok := h[n]; return v, ok }
	}
	if _, ok := r.Allowed(Health, headers(nil)); !ok {
		t.Error("an open category must be allowed")
	}
	if rule, ok := r.Allowed(Inference, headers(nil)); ok || rule.Header != "k" {
		t.Error("a missing header must be refused")
	}
	if _, ok := r.Allowed(Inference, headers(map[string]string{"k": "wrong"})); ok {
		t.Error("a wrong value must be refused")
	}
	if _, ok := r.Allowed(Inference, headers(map[string]string{"k": "v"})); !ok {
		t.Error("the right header must be allowed")
	}
	var none Rules
	if _, ok := none.Allowed(Inference, headers(nil)); !ok {
		t.Error("nil rules restrict nothing")
	}
}

func TestCheckRequest(t *testing.T) {
	r := Rules{}
	if err := r.AddHTTP("inference:infer-key=secret"); err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("POST", "/v2/models/m/infer", nil)
	err := r.CheckRequest(Inference, req)
	if inference.CodeOf(err) != inference.CodePermissionDenied || err.Error() != "This API is restricted, expecting header 'infer-key'" {
		t.Fatalf("without the header: %v", err)
	}
	req.Header.Set("Infer-Key", "secret")
	if err := r.CheckRequest(Inference, req); err != nil {
		t.Fatalf("with the header: %v", err)
	}
	if err := r.CheckRequest(Health, httptest.NewRequest("GET", "/", nil)); err != nil {
		t.Fatalf("an unrestricted category: %v", err)
	}
	if err := (Rules{}).CheckRequest(Inference, httptest.NewRequest("GET", "/", nil)); err != nil {
		t.Fatalf("no rules: %v", err)
	}
}
