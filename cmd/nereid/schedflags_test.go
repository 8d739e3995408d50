package main

import (
	"io"
	"strings"
	"testing"

	"github.com/nereid-project/nereid/ratelimit"
)

func TestRateLimitAndCacheFlags(t *testing.T) {
	c, err := parseFlags([]string{
		"--model-repository=r", "--rate-limit=execution_count",
		"--rate-limit-resource=R1:10", "--rate-limit-resource=R2:5:0",
		"--cache-config", "local,size=1048576",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	rl := c.sched.rateLimit
	if rl.Mode != ratelimit.ExecutionCount || len(rl.Resources) != 2 ||
		rl.Resources[0] != (ratelimit.Resource{Name: "R1", Count: 10, Device: ratelimit.AnyDevice}) ||
		rl.Resources[1] != (ratelimit.Resource{Name: "R2", Count: 5, Device: 0}) {
		t.Errorf("rate limit %+v", rl)
	}
	if cache := c.sched.newCache(); cache == nil || cache.Capacity() != 1048576 {
		t.Errorf("cache %+v", cache)
	}

	c, err = parseFlags([]string{"--model-repository=r"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.sched.rateLimit.Mode != ratelimit.Off || c.sched.newCache() != nil {
		t.Errorf("defaults: rate limit %+v, cache %+v", c.sched.rateLimit, c.sched.newCache())
	}

	for _, bad := range [][]string{
		{"--rate-limit=on"},
		{"--rate-limit-resource=R1"},
		{"--cache-config=redis,host=localhost"},
		{"--cache-config=local,size=big"},
	} {
		_, err := parseFlags(append([]string{"--model-repository=r"}, bad...), io.Discard)
		if err == nil || !strings.Contains(err.Error(), strings.SplitN(strings.TrimPrefix(bad[0], "--"), "=", 2)[0]) {
			t.Errorf("%v: error %v, want one naming the flag", bad, err)
		}
	}
}
