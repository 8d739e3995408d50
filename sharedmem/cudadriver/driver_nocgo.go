//go:build !cgo || !linux

package cudadriver

// driver and mapping exist only in cgo builds on Linux; openDriver never
// returns a driver here, so their methods are never called.
type driver struct{}

type mapping struct{}

func openDriver(path string) (*driver, int, error) {
	return nil, 0, unavailable("no CUDA driver: this build of Nereid cannot load %s (built without cgo)", path)
}

func (*driver) open([]byte, int) (mapping, uint64, error) {
	return mapping{}, 0, unavailable("no CUDA driver (built without cgo)")
}

func (*mapping) copy([]byte, uint64, bool) error {
	return unavailable("no CUDA driver (built without cgo)")
}

func (*mapping) close() error { return nil }
