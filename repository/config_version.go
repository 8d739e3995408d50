package repository

import (
	"slices"

	"github.com/nereid-project/nereid/proto/inferencepb"
)

// versionsToLoad applies a version policy to the version directories that
// exist (ascending). It returns the versions to load, ascending, and the
// versions a specific policy names that have no directory.
func versionsToLoad(policy *inferencepb.ModelVersionPolicy, existing []int64) (load, missing []int64) {
	switch {
	case policy.GetSpecific() != nil:
		for _, v := range policy.GetSpecific().GetVersions() {
			if slices.Contains(load, v) || slices.Contains(missing, v) {
				continue
			}
			if slices.Contains(existing, v) {
				load = append(load, v)
			} else {
				missing = append(missing, v)
			}
		}
		slices.Sort(load)
	case policy.GetAll() != nil:
		load = slices.Clone(existing)
	default:
		n := int(policy.GetLatest().GetNumVersions())
		if n > len(existing) {
			n = len(existing)
		}
		load = slices.Clone(existing[len(existing)-n:])
	}
	return load, missing
}
