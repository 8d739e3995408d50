package main

import (
	"io"
	"math"
	"testing"
)

func TestPayloadMemoryFlags(t *testing.T) {
	c, err := parseFlags([]string{"--model-repository=r"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.mem.grpcMaxMessageSize != math.MaxInt32 {
		t.Errorf("--grpc-max-message-size defaults to %d, not Triton's %d", c.mem.grpcMaxMessageSize, math.MaxInt32)
	}
	if avail := memoryAvailable(); avail <= 0 || c.mem.payloadBudget != avail/budgetShare {
		t.Errorf("default budget %d for %d bytes of memory", c.mem.payloadBudget, avail)
	}

	c, err = parseFlags([]string{"--model-repository=r", "--payload-budget-bytes=0", "--grpc-max-message-size=1048576"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.mem.payloadBudget != 0 || c.mem.grpcMaxMessageSize != 1<<20 {
		t.Errorf("explicit values: %+v", c.mem)
	}
	for _, bad := range []string{"--payload-budget-bytes=-2", "--grpc-max-message-size=0"} {
		if _, err := parseFlags([]string{"--model-repository=r", bad}, io.Discard); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}
