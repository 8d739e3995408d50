package procmem

import (
	"os"
	"testing"
)

func TestResident(t *testing.T) {
	self := Resident(0)
	if self <= 0 {
		t.Fatalf("Resident(0) = %d", self)
	}
	// Touching 64 MiB makes this process resident memory grow.
	buf := make([]byte, 64<<20)
	for i := range buf {
		buf[i] = 1
	}
	if grown := Resident(os.Getpid()); grown < self+32<<20 {
		t.Errorf("resident %d after touching 64 MiB, was %d", grown, self)
	}
	_ = buf[len(buf)-1]
	if got := Resident(1 << 30); got != 0 {
		t.Errorf("Resident of no process = %d", got)
	}
}

func TestMallocInUse(t *testing.T) {
	n, ok := MallocInUse()
	if !ok {
		t.Skip("no mallinfo2 in this C library")
	}
	if n <= 0 {
		t.Fatalf("MallocInUse = %d", n)
	}
}
