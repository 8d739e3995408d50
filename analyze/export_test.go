package analyze

import "github.com/nereid-project/nereid/proto/inferencepb"

// Describe is a configuration as the point of the space it is, in words.
func Describe(cfg *inferencepb.ModelConfig) string { return configOf(cfg).String() }
