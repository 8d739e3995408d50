package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// The layout written under -out, as kubeconform's -schema-location
// templates:
//
//	kubernetes/{{ .ResourceKind }}{{ .KindSuffix }}.json   (and _definitions.json)
//	crds/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json
//
// Both are strict: an object with declared properties takes no others
// (kubeconform -strict only picks a schema variant; the strictness is in
// the schema), except where the API marks a field as preserving unknown
// fields.
func schemasCmd(args []string, stderr io.Writer) error {
	fl := flag.NewFlagSet("schemas", flag.ContinueOnError)
	fl.SetOutput(stderr)
	out := fl.String("out", "", "output folder")
	swagger := fl.String("swagger", "", "Kubernetes' api/openapi-spec/swagger.json")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("schemas: -out is required")
	}
	n := 0
	if *swagger != "" {
		k, err := kubernetesSchemas(*swagger, filepath.Join(*out, "kubernetes"))
		if err != nil {
			return fmt.Errorf("%s: %w", *swagger, err)
		}
		n += k
	}
	for _, crd := range fl.Args() {
		k, err := crdSchemas(crd, filepath.Join(*out, "crds"))
		if err != nil {
			return fmt.Errorf("%s: %w", crd, err)
		}
		n += k
	}
	fmt.Fprintf(stderr, "schemas: %d kinds written under %s\n", n, *out)
	return nil
}

// kubernetesSchemas writes every definition of swagger.json into
// _definitions.json and, for each definition that is a kind
// (x-kubernetes-group-version-kind), a file that refers to it.
func kubernetesSchemas(path, dir string) (int, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	var doc struct {
		Definitions map[string]map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return 0, err
	}
	if len(doc.Definitions) == 0 {
		return 0, errors.New("no definitions")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	defs := map[string]any{}
	for name, d := range doc.Definitions {
		switch name {
		case "io.k8s.apimachinery.pkg.util.intstr.IntOrString":
			defs[name] = map[string]any{"description": d["description"], "oneOf": []any{
				map[string]any{"type": "string"}, map[string]any{"type": "integer"}}}
		case "io.k8s.apimachinery.pkg.api.resource.Quantity":
			defs[name] = map[string]any{"description": d["description"], "oneOf": []any{
				map[string]any{"type": "string"}, map[string]any{"type": "number"}}}
		default:
			defs[name] = convert(d, true)
		}
	}
	if err := writeJSON(filepath.Join(dir, "_definitions.json"), map[string]any{"definitions": defs}); err != nil {
		return 0, err
	}
	n := 0
	names := make([]string, 0, len(doc.Definitions))
	for name := range doc.Definitions {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		gvks, _ := doc.Definitions[name]["x-kubernetes-group-version-kind"].([]any)
		for _, g := range gvks {
			gvk, _ := g.(map[string]any)
			group, _ := gvk["group"].(string)
			version, _ := gvk["version"].(string)
			kind, _ := gvk["kind"].(string)
			apiVersion := version
			if group != "" {
				apiVersion = group + "/" + version
			}
			schema := map[string]any{
				"$ref": "_definitions.json#/definitions/" + name,
				// kind and apiVersion pin the file to its kind, as the
				// published kubernetes-json-schema files do.
				"properties": map[string]any{
					"apiVersion": map[string]any{"enum": []any{apiVersion}},
					"kind":       map[string]any{"enum": []any{kind}},
				},
			}
			file := filepath.Join(dir, strings.ToLower(kind)+kindSuffix(group, version)+".json")
			if err := writeJSON(file, schema); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// kindSuffix is kubeconform's {{ .KindSuffix }}: -v1 for the core group,
// -<first label of the group>-<version> otherwise.
func kindSuffix(group, version string) string {
	if group == "" {
		return "-" + strings.ToLower(version)
	}
	return "-" + strings.ToLower(strings.Split(group, ".")[0]) + "-" + strings.ToLower(version)
}

// crdSchemas writes one schema per served version of each
// CustomResourceDefinition in the YAML file.
func crdSchemas(path, dir string) (int, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	docs, err := yamlDocuments(raw)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, d := range docs {
		m, _ := d.(map[string]any)
		if m["kind"] != "CustomResourceDefinition" {
			continue
		}
		spec, _ := m["spec"].(map[string]any)
		group, _ := spec["group"].(string)
		names, _ := spec["names"].(map[string]any)
		kind, _ := names["kind"].(string)
		versions, _ := spec["versions"].([]any)
		for _, v := range versions {
			ver, _ := v.(map[string]any)
			name, _ := ver["name"].(string)
			schema, _ := ver["schema"].(map[string]any)
			api, ok := schema["openAPIV3Schema"].(map[string]any)
			if !ok || group == "" || kind == "" || name == "" {
				return n, fmt.Errorf("CRD %v: version without a name, group, kind or openAPIV3Schema", m["metadata"])
			}
			out := convert(api, true).(map[string]any)
			props, _ := out["properties"].(map[string]any)
			if props == nil {
				props = map[string]any{}
				out["properties"] = props
			}
			props["apiVersion"] = map[string]any{"enum": []any{group + "/" + name}}
			props["kind"] = map[string]any{"enum": []any{kind}}
			file := filepath.Join(dir, group, strings.ToLower(kind)+"_"+name+".json")
			if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
				return n, err
			}
			if err := writeJSON(file, out); err != nil {
				return n, err
			}
			n++
		}
	}
	if n == 0 {
		return 0, errors.New("no CustomResourceDefinition in it")
	}
	return n, nil
}

// convert turns an OpenAPI schema (Kubernetes' dialect) into JSON Schema
// draft 4, which kubeconform compiles by default: $refs point into
// _definitions.json's "definitions"; int-or-string fields take either;
// null is accepted wherever a type is (the API server treats it as
// absent); strict adds additionalProperties: false to objects that list
// their properties, unless they preserve unknown fields.
func convert(node any, strict bool) any {
	switch n := node.(type) {
	case []any:
		out := make([]any, len(n))
		for i, e := range n {
			out[i] = convert(e, strict)
		}
		return out
	case map[string]any:
		out := map[string]any{}
		for k, v := range n {
			switch {
			case k == "$ref":
				ref, _ := v.(string)
				out[k] = ref // #/definitions/... resolves inside _definitions.json
			case k == "properties" || k == "patternProperties" || k == "definitions":
				// A map of names to schemas: its keys are not keywords.
				props := map[string]any{}
				if pm, ok := v.(map[string]any); ok {
					for name, s := range pm {
						props[name] = convert(s, strict)
					}
				}
				out[k] = props
			case k == "default" || k == "example" || k == "enum":
				out[k] = v // values, not schemas
			case strings.HasPrefix(k, "x-kubernetes-") || k == "nullable":
				// Read below.
			default:
				out[k] = convert(v, strict)
			}
		}
		if n["x-kubernetes-int-or-string"] == true || n["format"] == "int-or-string" {
			delete(out, "type")
			delete(out, "format")
			out["oneOf"] = []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}
		}
		if t, ok := out["type"].(string); ok {
			out["type"] = []any{t, "null"}
		}
		preserve := n["x-kubernetes-preserve-unknown-fields"] == true
		_, hasProps := n["properties"]
		_, hasAdditional := n["additionalProperties"]
		if strict && hasProps && !hasAdditional && !preserve {
			out["additionalProperties"] = false
		}
		return out
	default:
		return node
	}
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
