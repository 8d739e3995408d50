package inference

import (
	"fmt"
	"regexp"
	"strings"
)

// CompileForwardPattern compiles a --http-header-forward-pattern or
// --grpc-header-forward-pattern the way Triton matches it:
// case-insensitively unless the pattern turns that off with a leading
// "(?-i)". An empty pattern forwards nothing (nil).
func CompileForwardPattern(flag, pattern string) (*regexp.Regexp, error) {
	if pattern == "" {
		return nil, nil
	}
	if !strings.HasPrefix(pattern, "(?-i)") {
		pattern = "(?i)" + pattern
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, fmt.Errorf("invalid --%s %q: %w", flag, pattern, err)
	}
	return re, nil
}

// ReservedForwardedParam reports whether a forwarded header would set one
// of Triton's own request parameters.
func ReservedForwardedParam(name string) bool {
	switch strings.ToLower(name) {
	case "sequence_id", "sequence_start", "sequence_end", "priority", "timeout", "headers", "binary_data_output":
		return true
	}
	return len(name) >= 7 && strings.EqualFold(name[:7], "triton_")
}
