package httpfront

import (
	"testing"
)

func TestResponseEncoding(t *testing.T) {
	tests := map[string]string{
		"":                          "",
		"gzip":                      "gzip",
		"deflate":                   "deflate",
		"gzip, deflate":             "gzip",
		"deflate, gzip":             "deflate",
		"gzip;q=0.5, deflate;q=0.9": "deflate",
		"identity;q=1, gzip;q=0.5":  "",
		"br":                        "",
		"gzip;q=abc, deflate":       "deflate",
		"*":                         "",
		" , gzip":                   "gzip",
	}
	for in, want := range tests {
		if got := responseEncoding([]byte(in)); got != want {
			t.Errorf("responseEncoding(%q) = %q, want %q", in, got, want)
		}
	}
}

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
