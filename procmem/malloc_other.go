//go:build !cgo || !linux

package procmem

// MallocInUse is unknown without cgo on Linux.
func MallocInUse() (int64, bool) { return 0, false }
