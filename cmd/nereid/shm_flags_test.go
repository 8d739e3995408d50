package main

import (
	"io"
	"testing"
)

func TestAllowClientShmFlag(t *testing.T) {
	c, err := parseFlags([]string{"--model-repository=r"}, io.Discard)
	if err != nil || c.allowClientShm {
		t.Fatalf("default: %v %v; want false, as in Triton since 26.04", c.allowClientShm, err)
	}
	c, err = parseFlags([]string{"--model-repository=r", "--allow-client-shm=true"}, io.Discard)
	if err != nil || !c.allowClientShm {
		t.Fatalf("--allow-client-shm=true: %v %v", c.allowClientShm, err)
	}
	if _, err := parseFlags([]string{"--model-repository=r", "--allow-client-shm=maybe"}, io.Discard); err == nil {
		t.Fatal("--allow-client-shm=maybe accepted")
	}
}
