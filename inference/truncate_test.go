package inference

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestTruncate(t *testing.T) {
	if got := Truncate("short", 10); got != "short" {
		t.Errorf("a text that fits changed: %q", got)
	}
	if got := Truncate(strings.Repeat("a", 300), 256); got != strings.Repeat("a", 256)+"…(44 more bytes)" {
		t.Errorf("got %q", got)
	}
	// Never in the middle of a UTF-8 sequence.
	s := strings.Repeat("é", 200) // 400 bytes
	got := Truncate(s, 255)
	if !strings.HasPrefix(got, strings.Repeat("é", 127)+"…(146 more bytes)") {
		t.Errorf("got %q", got)
	}
}

func TestErrorfBoundsEchoedArguments(t *testing.T) {
	name := strings.Repeat("n", 100000)
	shape := make([]int64, 10000)
	err := InvalidArg("unexpected shape for input '%s' for model %q. Expected [1], got %v", name, name, shape)
	msg := err.Error()
	if len(msg) > 3*MaxEchoBytes+200 {
		t.Fatalf("message of %d bytes", len(msg))
	}
	for _, want := range []string{
		"unexpected shape for input '" + strings.Repeat("n", MaxEchoBytes) + "…(99744 more bytes)' for model",
		`"` + strings.Repeat("n", MaxEchoBytes) + `…(99744 more bytes)"`,
		"Expected [1], got [0 0 0",
		"more bytes)",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q does not contain %q", msg[:min(len(msg), 400)], want)
		}
	}
	// Short arguments and %w are kept as they are.
	cause := errors.New("cause")
	err = Errorf(CodeNotFound, "model '%s' version %d: %w", "m", 3, cause)
	if err.Error() != "model 'm' version 3: cause" || !errors.Is(err, cause) || CodeOf(err) != CodeNotFound {
		t.Errorf("got %v", err)
	}
	// A long cause is bounded with the whole text.
	err = Internal("load failed: %w", fmt.Errorf("%s", strings.Repeat("x", 10000)))
	if len(err.Error()) > MaxMessageBytes+30 || !strings.HasSuffix(err.Error(), "more bytes)") {
		t.Errorf("a long cause gives %d bytes", len(err.Error()))
	}
}
