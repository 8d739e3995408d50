package main

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestConvertStrictAndKubernetesDialect(t *testing.T) {
	in := map[string]any{
		"type": "object",
		"properties": map[string]any{
			"port":    map[string]any{"x-kubernetes-int-or-string": true},
			"labels":  map[string]any{"type": "object", "additionalProperties": map[string]any{"type": "string"}},
			"free":    map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": map[string]any{}},
			"type":    map[string]any{"type": "string", "enum": []any{"a"}, "default": map[string]any{"type": "x"}},
			"pointer": map[string]any{"$ref": "#/definitions/io.k8s.Foo"},
		},
	}
	got := convert(in, true).(map[string]any)
	if got["additionalProperties"] != false {
		t.Errorf("an object with properties is not closed: %v", got)
	}
	props := got["properties"].(map[string]any)
	port := props["port"].(map[string]any)
	if _, ok := port["oneOf"]; !ok || port["type"] != nil {
		t.Errorf("int-or-string: %v", port)
	}
	if props["labels"].(map[string]any)["additionalProperties"] == false {
		t.Error("a map's additionalProperties schema was replaced")
	}
	if _, closed := props["free"].(map[string]any)["additionalProperties"]; closed {
		t.Error("preserve-unknown-fields object was closed")
	}
	typ := props["type"].(map[string]any)
	if !reflect.DeepEqual(typ["type"], []any{"string", "null"}) {
		t.Errorf("a property named type: %v", typ)
	}
	if !reflect.DeepEqual(typ["default"], map[string]any{"type": "x"}) {
		t.Errorf("a default value was converted as a schema: %v", typ["default"])
	}
	if props["pointer"].(map[string]any)["$ref"] != "#/definitions/io.k8s.Foo" {
		t.Errorf("$ref: %v", props["pointer"])
	}
}

func TestKindSuffix(t *testing.T) {
	for _, c := range []struct{ group, version, want string }{
		{"", "v1", "-v1"}, {"apps", "v1", "-apps-v1"}, {"autoscaling", "v2", "-autoscaling-v2"},
		{"policy", "v1", "-policy-v1"},
	} {
		if got := kindSuffix(c.group, c.version); got != c.want {
			t.Errorf("kindSuffix(%q, %q) = %q, want %q", c.group, c.version, got, c.want)
		}
	}
}

func TestOwners(t *testing.T) {
	own, err := parseOwners([]string{"home/nonroot=65532:65532", "/home/nonroot/x/=1:2"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name     string
		uid, gid int
	}{{"home", 0, 0}, {"home/nonroot", 65532, 65532}, {"home/nonroot/a", 65532, 65532}, {"home/nonroot/x/y", 1, 2}, {"home/nonrootx", 0, 0}} {
		if u, g := ownerOf(c.name, own); u != c.uid || g != c.gid {
			t.Errorf("ownerOf(%q) = %d:%d, want %d:%d", c.name, u, g, c.uid, c.gid)
		}
	}
	if _, err := parseOwners([]string{"x=a:b"}); err == nil {
		t.Error("x=a:b was accepted")
	}
}

func TestYAMLDocuments(t *testing.T) {
	docs, err := yamlDocuments([]byte("# c\n---\na: 1\n---\n---\nb: [x]\n"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(docs)
	if string(b) != `[{"a":1},{"b":["x"]}]` {
		t.Errorf("got %s", b)
	}
}
