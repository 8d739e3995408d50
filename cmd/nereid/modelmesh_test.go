package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestModelMeshFlags(t *testing.T) {
	base := []string{"--model-repository=r", "--allow-modelmesh=true"}
	c, err := parseFlags(append(base, "--model-control-mode=explicit", "--model-cache-memory=1000000",
		"--modelmesh-port=9085", "--modelmesh-load-timeout-secs=90", "--modelmesh-default-model-size=5000"), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if mc := c.modelmesh; !mc.allow || mc.port != 9085 || mc.loadTimeoutSecs != 90 || mc.defaultModelSize != 5000 || mc.address != "127.0.0.1" {
		t.Errorf("parsed %+v", mc)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{append(base, "--model-cache-memory=1000000"), "needs --model-control-mode=explicit"},
		{append(base, "--model-control-mode=explicit"), "needs --model-cache-memory"},
		{append(base, "--model-control-mode=explicit", "--model-cache-memory=1000", "--allow-grpc=false"), "needs the gRPC port"},
		{[]string{"--model-repository=r", "--modelmesh-port=70000"}, "--modelmesh-port: 70000 is not a port number"},
		{[]string{"--model-repository=r", "--modelmesh-default-model-size=0"}, "must be positive"},
		{[]string{"--model-repository=r", "--modelmesh-load-timeout-secs=0"}, "must be between 1 and"},
	} {
		_, err := parseFlags(tc.args, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
}
