package main

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// --load-model outside explicit mode is refused at start, as Triton does
// since 24.06 (it used to be ignored, every model then loading).
func TestLoadModelNeedsExplicitMode(t *testing.T) {
	for _, args := range [][]string{
		{"--model-repository=r", "--load-model=a"},
		{"--model-repository=r", "--load-model=*", "--model-control-mode=none"},
		{"--model-repository=r", "--model-control-mode=poll", "--load-model", "a"},
	} {
		if _, err := parseFlags(args, io.Discard); !errors.Is(err, errLoadModelMode) {
			t.Errorf("%q: %v, want the --load-model refusal", args, err)
		}
	}
	var stderr bytes.Buffer
	if rc := run([]string{"--model-repository=r", "--load-model=a"}, &stderr); rc != 2 ||
		!strings.Contains(stderr.String(), "error: Use of '--load-model' requires setting '--model-control-mode=explicit' as well.") {
		t.Errorf("exit status %d, stderr %q", rc, stderr.String())
	}
	c, err := parseFlags([]string{"--model-repository=r", "--model-control-mode=explicit", "--load-model=a"}, io.Discard)
	if err != nil || len(c.loadModels) != 1 {
		t.Errorf("explicit mode: %v, %v", c, err)
	}
	if _, err := parseFlags([]string{"--model-repository=r", "--model-control-mode=poll"}, io.Discard); err != nil {
		t.Errorf("poll mode without --load-model: %v", err)
	}
}
