package httpfront

import (
	"testing"
)

func TestModelVersion(t *testing.T) {
	for in, want := range map[string]string{"": "", "1": "1", "007": "7", "0": "0"} {
		if got, err := modelVersion(in); err != nil || got != want {
			t.Errorf("modelVersion(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := modelVersion("99999999999999999999"); err == nil {
		t.Error("overflowing version accepted")
	}
}
