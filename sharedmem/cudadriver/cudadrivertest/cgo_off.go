//go:build !cgo || !linux

package cudadrivertest

// cgoLoader reports whether package cudadriver can load a driver library
// in this build.
const cgoLoader = false
