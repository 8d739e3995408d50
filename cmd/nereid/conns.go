package main

import (
	"flag"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// connConfig bounds what clients can hold open: connections per listener
// (each costs a file descriptor, and a process out of descriptors cannot
// accept, open a model or register shared memory) and how long an HTTP
// connection may take to send a request or sit idle. Triton has no such
// flags; these are Nereid's.
type connConfig struct {
	httpReadTimeout     time.Duration
	httpIdleTimeout     time.Duration
	httpMaxConns        int // -1: derived from the descriptor limit
	httpMaxConnsPerPeer int // 0: no cap per client address
	grpcMaxConns        int // -1: derived from the descriptor limit
	readSecs, idleSecs  int
	descriptorSoftLimit uint64
	descriptorHardLimit uint64
}

// auxiliaryListenerCap caps the connections of the metrics and pprof
// listeners, which serve scrapers and operators, not clients.
const auxiliaryListenerCap = 64

func (c *connConfig) register(fs *flag.FlagSet) {
	fs.IntVar(&c.readSecs, "http-read-timeout-secs", 120, "seconds an HTTP client has to send a request's headers and body (0: no limit; Nereid only)")
	fs.IntVar(&c.idleSecs, "http-idle-timeout-secs", 60, "seconds an idle HTTP keep-alive connection stays open (0: no limit; Nereid only)")
	fs.IntVar(&c.httpMaxConns, "http-max-connections", -1, "HTTP connections open at once; more wait to be accepted (default: half the descriptor limit; 0: no cap; Nereid only)")
	fs.IntVar(&c.httpMaxConnsPerPeer, "http-max-connections-per-client", 0, "HTTP connections one client address may hold open; more are refused (0: no cap; Nereid only)")
	fs.IntVar(&c.grpcMaxConns, "grpc-max-connections", -1, "gRPC connections open at once; more wait to be accepted (default: a quarter of the descriptor limit; 0: no cap; Nereid only)")
}

func (c *connConfig) finish() error {
	if c.readSecs < 0 || c.idleSecs < 0 {
		return fmt.Errorf("--http-read-timeout-secs and --http-idle-timeout-secs must not be negative")
	}
	if c.httpMaxConns < -1 || c.grpcMaxConns < -1 || c.httpMaxConnsPerPeer < 0 {
		return fmt.Errorf("--http-max-connections, --grpc-max-connections and --http-max-connections-per-client must not be negative")
	}
	c.httpReadTimeout = time.Duration(c.readSecs) * time.Second
	c.httpIdleTimeout = time.Duration(c.idleSecs) * time.Second
	// Go raises the soft descriptor limit to the hard one at start; the
	// caps leave a quarter of it to models, shared memory and the rest.
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err == nil {
		c.descriptorSoftLimit, c.descriptorHardLimit = lim.Cur, lim.Max
	}
	soft := int(min(c.descriptorSoftLimit, 1<<30))
	if soft == 0 { // unknown: no derived caps
		c.httpMaxConns, c.grpcMaxConns = max(c.httpMaxConns, 0), max(c.grpcMaxConns, 0)
	}
	if c.httpMaxConns == -1 {
		c.httpMaxConns = max(soft/2, 16)
	}
	if c.grpcMaxConns == -1 {
		c.grpcMaxConns = max(soft/4, 16)
	}
	return nil
}
