// Package cudadriver finds the CUDA driver at run time, without linking
// against it, so that one binary serves on machines with and without GPUs.
// It is the single place where Nereid's CUDA shared-memory support calls the
// driver library (libcuda.so.1); without cgo it reports the driver as absent.
package cudadriver

import "sync"

var (
	probeOnce sync.Once
	devices   int
	probeErr  error
)

// Devices returns how many CUDA devices the driver sees, or an error saying
// why no driver could be used (not installed, no device, built without
// cgo). The driver is probed once; later calls return the same answer.
func Devices() (int, error) {
	probeOnce.Do(func() { devices, probeErr = probe() })
	return devices, probeErr
}
