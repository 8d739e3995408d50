package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAsyncFlags(t *testing.T) {
	c, err := parseFlags([]string{"--model-repository=r", "--http-address=127.0.0.1"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ac := c.async
	if ac.allow || ac.port != 8003 || ac.address != "127.0.0.1" || ac.dir != "" || ac.maxRequestBytes != 1<<30 ||
		ac.maxQueue != 1000 || ac.maxConcurrent != 1 || ac.maxAttempts != 3 || ac.ttlSecs != 86400 ||
		ac.notifyAttempts != 3 || ac.notifySecs != 10 {
		t.Errorf("defaults %+v", ac)
	}
	c, err = parseFlags([]string{"--model-repository=r", "--allow-async=true"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if base, err := os.UserCacheDir(); err == nil && c.async.dir != filepath.Join(base, "nereid-async") {
		t.Errorf("default dir %q", c.async.dir)
	}
	c, err = parseFlags([]string{"--model-repository=r", "--allow-async=true", "--async-address=::1", "--async-port=9003",
		"--async-dir=/q", "--async-max-request-bytes=10", "--async-max-queue=5", "--async-max-concurrent-invocations=2",
		"--async-max-attempts=1", "--async-result-ttl-secs=60", "--async-notify-attempts=5", "--async-notify-timeout-secs=2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ac = c.async
	if !ac.allow || ac.address != "::1" || ac.port != 9003 || ac.dir != "/q" || ac.maxRequestBytes != 10 || ac.maxQueue != 5 ||
		ac.maxConcurrent != 2 || ac.maxAttempts != 1 || ac.ttlSecs != 60 || ac.notifyAttempts != 5 || ac.notifySecs != 2 {
		t.Errorf("parsed %+v", ac)
	}
	for _, bad := range []string{"--async-port=70000", "--async-max-request-bytes=0", "--async-max-queue=-1",
		"--async-max-concurrent-invocations=0", "--async-max-attempts=0", "--async-result-ttl-secs=0",
		"--async-notify-attempts=0", "--async-notify-timeout-secs=0"} {
		_, err := parseFlags([]string{"--model-repository=r", bad}, io.Discard)
		name := strings.TrimPrefix(strings.SplitN(bad, "=", 2)[0], "--")
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v", bad, err)
		}
	}
}
