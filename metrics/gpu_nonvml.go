//go:build !(cgo && linux)

package metrics

import "errors"

// openNVML reports that this build cannot reach NVML: go-nvml needs cgo.
func openNVML() (gpuSource, error) {
	return nil, errors.New("GPU metrics need a Linux build with cgo")
}
