package v2wire

import "testing"

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
		if got := ResponseEncoding([]byte(in)); got != want {
			t.Errorf("ResponseEncoding(%q) = %q, want %q", in, got, want)
		}
	}
}
