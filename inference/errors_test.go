package inference

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestCheckFileParam(t *testing.T) {
	for _, ok := range []string{"1/model.onnx", "config.pbtxt", "1/" + strings.Repeat("a", 255)} {
		if err := CheckFileParam("m", ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for key, want := range map[string]string{
		"1/mo\x00del.onnx":                 "contains a NUL byte",
		"1/" + strings.Repeat("a", 256):    "file name too long: a path component is 256 bytes, at most 255",
		strings.Repeat("a/", 2100) + "x":   "file name too long: the path is 4201 bytes",
		strings.Repeat("b", 100000) + "/x": "file name too long",
	} {
		err := CheckFileParam("m", key)
		if CodeOf(err) != CodeInvalidArg || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "failed to load 'm', Invalid file parameter 'file:") {
			t.Errorf("%.40q: %v, want InvalidArg with %q", key, err, want)
		}
		if len(err.Error()) > 2*MaxEchoBytes+200 {
			t.Errorf("%.40q: message of %d bytes", key, len(err.Error()))
		}
	}
	err := DataTypeMismatch("INPUT0", FP64, "simple", Int32)
	if err.Error() != "inference input 'INPUT0' data-type is 'FP64', but model 'simple' expects 'INT32'" || CodeOf(err) != CodeInvalidArg {
		t.Errorf("got %v", err)
	}
}

func TestMeansNotReady(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{NotFound("Request for unknown model: 'm' is not found"), true},
		{Unavailable("model 'm' version 2 is not at ready state"), true},
		{Internal("broken"), false},
		{InvalidArg("bad version"), false},
		{errors.New("plain"), false},
		{fmt.Errorf("wrapped: %w", NotFound("m")), true},
	} {
		if got := MeansNotReady(tc.err); got != tc.want {
			t.Errorf("%v: %v, want %v", tc.err, got, tc.want)
		}
	}
}
