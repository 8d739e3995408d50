package onnxruntime

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestAPIIndices checks the OrtApi indices capi.go calls through against
// the order of struct OrtApi in ONNX Runtime's onnxruntime_c_api.h (the
// copy the onnxruntime_go module carries, which go.mod pins for the
// benchmarks): a wrong index would call another function. The header
// ships with a version at least as new as capi.go's ORT_API_VERSION, and
// the table is append-only, so older indices never move.
func TestAPIIndices(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/yalue/onnxruntime_go").Output()
	if err != nil {
		t.Fatalf("finding the onnxruntime_go module (for its copy of onnxruntime_c_api.h): %v", err)
	}
	header, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "onnxruntime_c_api.h"))
	if err != nil {
		t.Fatal(err)
	}
	table := ortAPIMembers(t, string(header))
	src, err := os.ReadFile("capi.go")
	if err != nil {
		t.Fatal(err)
	}
	uses := regexp.MustCompile(`(?m)^\s*NRD_(\w+) = (\d+),`).FindAllStringSubmatch(string(src), -1)
	if len(uses) < 40 {
		t.Fatalf("found %d NRD_ indices in capi.go; the pattern no longer matches its enum", len(uses))
	}
	for _, u := range uses {
		idx, _ := strconv.Atoi(u[2])
		if idx >= len(table) || table[idx] != u[1] {
			got := "past the end"
			if idx < len(table) {
				got = table[idx]
			}
			t.Errorf("capi.go calls %s at index %d, which the header's OrtApi has as %s", u[1], idx, got)
		}
	}
}

// ortAPIMembers lists the members of struct OrtApi in order.
func ortAPIMembers(t *testing.T, header string) []string {
	t.Helper()
	start := strings.Index(header, "\nstruct OrtApi {")
	if start < 0 {
		t.Fatal("no struct OrtApi in the header")
	}
	body := header[start+len("\nstruct OrtApi {"):]
	body = body[:strings.Index(body, "\n};")]
	body = regexp.MustCompile(`(?s)/\*.*?\*/`).ReplaceAllString(body, "")
	body = regexp.MustCompile(`//[^\n]*`).ReplaceAllString(body, "")
	callName := regexp.MustCompile(`ORT_API_CALL\s*\*\s*(\w+)\s*\)`)
	var names []string
	for m := range strings.SplitSeq(body, ";") {
		m = strings.TrimSpace(m)
		switch {
		case m == "":
		case strings.HasPrefix(m, "ORT_API2_STATUS("):
			names = append(names, strings.TrimSpace(strings.SplitN(strings.TrimPrefix(m, "ORT_API2_STATUS("), ",", 2)[0]))
		case strings.HasPrefix(m, "ORT_CLASS_RELEASE("):
			names = append(names, "Release"+strings.TrimSuffix(strings.TrimPrefix(m, "ORT_CLASS_RELEASE("), ")"))
		case strings.HasPrefix(m, "ORT_API_T("):
			names = append(names, strings.TrimSpace(strings.Split(m, ",")[1]))
		case callName.MatchString(m):
			names = append(names, callName.FindStringSubmatch(m)[1])
		default:
			t.Fatalf("cannot read this OrtApi member: %q", m)
		}
	}
	return names
}
