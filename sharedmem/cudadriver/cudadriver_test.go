package cudadriver

import (
	"errors"
	"strings"
	"testing"
)

// A driver file that is missing or is not a CUDA driver says so, and the
// error is the "unavailable" kind that the server answers with 501. These
// load the library directly, past the once-per-process loader.
func TestOpenDriverRefusals(t *testing.T) {
	_, n, err := openDriver("/nonexistent/libcuda.so.1")
	if !errors.Is(err, ErrUnavailable) || n != 0 || !strings.Contains(err.Error(), "no CUDA driver") || !strings.Contains(err.Error(), "/nonexistent/libcuda.so.1") {
		t.Fatalf("missing file: %d, %v", n, err)
	}
	_, _, err = openDriver("libc.so.6")
	if !errors.Is(err, ErrUnavailable) || !(strings.Contains(err.Error(), "lacks cuInit") || strings.Contains(err.Error(), "without cgo")) {
		t.Fatalf("not a driver: %v", err)
	}
}

func TestErrorText(t *testing.T) {
	e := &Error{Call: "cuIpcOpenMemHandle_v2", Code: 400, Name: "CUDA_ERROR_INVALID_HANDLE"}
	if got := e.Error(); got != "cuIpcOpenMemHandle_v2 failed: CUDA_ERROR_INVALID_HANDLE (400)" {
		t.Fatal(got)
	}
	e.Name = ""
	if got := e.Error(); got != "cuIpcOpenMemHandle_v2 failed: CUresult 400" {
		t.Fatal(got)
	}
	if errors.Is(invalidArg("x"), ErrUnavailable) || !errors.Is(invalidArg("x"), ErrInvalidArg) {
		t.Fatal("error classes mixed up")
	}
}
