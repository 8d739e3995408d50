package cudadriver

import "testing"

// The test machines have no GPU; where one is present the probe must find
// at least one device. Either way the answer is stable across calls.
func TestDevicesIsStable(t *testing.T) {
	n1, err1 := Devices()
	n2, err2 := Devices()
	if n1 != n2 || (err1 == nil) != (err2 == nil) {
		t.Fatalf("Devices changed its answer: (%d, %v) then (%d, %v)", n1, err1, n2, err2)
	}
	if err1 == nil && n1 < 1 {
		t.Fatalf("Devices = %d with no error; want at least one device", n1)
	}
	if err1 != nil && n1 != 0 {
		t.Fatalf("Devices = %d with error %v; want 0", n1, err1)
	}
	t.Logf("CUDA devices: %d, err: %v", n1, err1)
}
