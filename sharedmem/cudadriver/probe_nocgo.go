//go:build !cgo || !linux

package cudadriver

import "errors"

func probe() (int, error) {
	return 0, errors.New("no CUDA driver: this build of Nereid cannot load libcuda.so.1 (built without cgo)")
}
