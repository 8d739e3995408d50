package main

import (
	"flag"
	"fmt"
	"math"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	grpcfront "github.com/nereid-project/nereid/server/grpc"
)

// grpcConfig is Triton's gRPC transport flags: TLS, keepalive and
// response compression.
type grpcConfig struct {
	tls                   tlsFlags
	compressionLevel      string
	keepaliveTimeMs       int64
	keepaliveTimeoutMs    int64
	permitWithoutCalls    bool
	maxPingsWithoutData   int
	minRecvPingIntervalMs int64
	maxPingStrikes        int
	maxConnAgeMs          int64
	maxConnAgeGraceMs     int64

	keepalive keepalive.ServerParameters
	policy    keepalive.EnforcementPolicy
}

// Triton's defaults for the keepalive flags (grpc-go's, too, except where
// a flag says otherwise).
const (
	defKeepaliveTimeMs       = 7_200_000
	defKeepaliveTimeoutMs    = 20_000
	defMaxPingsWithoutData   = 2
	defMinRecvPingIntervalMs = 300_000
	defMaxPingStrikes        = 2
)

func (c *grpcConfig) register(fs *flag.FlagSet) {
	c.tls = tlsFlags{prefix: "grpc"}
	c.tls.register(fs, "gRPC", false)
	fs.StringVar(&c.compressionLevel, "grpc-infer-response-compression-level", "none",
		"compression of inference responses to clients that accept gzip: none, low, medium or high (a compressed request is always answered the same way)")
	fs.Int64Var(&c.keepaliveTimeMs, "grpc-keepalive-time", defKeepaliveTimeMs, "milliseconds of inactivity after which the server pings a client")
	fs.Int64Var(&c.keepaliveTimeoutMs, "grpc-keepalive-timeout", defKeepaliveTimeoutMs, "milliseconds the server waits for a ping's answer before closing the connection")
	fs.BoolVar(&c.permitWithoutCalls, "grpc-keepalive-permit-without-calls", false, "allow client pings on connections with no call in progress")
	fs.IntVar(&c.maxPingsWithoutData, "grpc-http2-max-pings-without-data", defMaxPingsWithoutData,
		"only Triton's default 2 is accepted: grpc-go has no such setting")
	fs.Int64Var(&c.minRecvPingIntervalMs, "grpc-http2-min-recv-ping-interval-without-data", defMinRecvPingIntervalMs,
		"shortest interval, in milliseconds, between client pings the server accepts; faster pings count as strikes")
	fs.IntVar(&c.maxPingStrikes, "grpc-http2-max-ping-strikes", defMaxPingStrikes,
		"only Triton's default 2 is accepted: grpc-go closes a connection at its second strike")
	fs.Int64Var(&c.maxConnAgeMs, "grpc-max-connection-age", 0, "milliseconds after which a connection is closed gracefully (0: never)")
	fs.Int64Var(&c.maxConnAgeGraceMs, "grpc-max-connection-age-grace", 0, "milliseconds calls may run on after --grpc-max-connection-age (0: no bound)")
}

func (c *grpcConfig) finish() error {
	if err := c.tls.finish(); err != nil {
		return err
	}
	if _, ok := grpcfront.ResponseCompressionLevels[c.compressionLevel]; !ok {
		return fmt.Errorf("--grpc-infer-response-compression-level: '%s' is not one of none, low, medium, high", c.compressionLevel)
	}
	if c.maxPingsWithoutData != defMaxPingsWithoutData {
		return fmt.Errorf("--grpc-http2-max-pings-without-data=%d: not implemented (only Triton's default %d)", c.maxPingsWithoutData, defMaxPingsWithoutData)
	}
	if c.maxPingStrikes != defMaxPingStrikes {
		return fmt.Errorf("--grpc-http2-max-ping-strikes=%d: not implemented (only Triton's default %d)", c.maxPingStrikes, defMaxPingStrikes)
	}
	for _, f := range []struct {
		name string
		v    int64
		min  int64
	}{
		{"grpc-keepalive-time", c.keepaliveTimeMs, 1}, {"grpc-keepalive-timeout", c.keepaliveTimeoutMs, 1},
		{"grpc-http2-min-recv-ping-interval-without-data", c.minRecvPingIntervalMs, 1},
		{"grpc-max-connection-age", c.maxConnAgeMs, 0}, {"grpc-max-connection-age-grace", c.maxConnAgeGraceMs, 0},
	} {
		if f.v < f.min || f.v > math.MaxInt64/int64(time.Millisecond) {
			return fmt.Errorf("--%s: %d milliseconds is out of range", f.name, f.v)
		}
	}
	ms := func(v int64) time.Duration { return time.Duration(v) * time.Millisecond }
	c.keepalive = keepalive.ServerParameters{Time: ms(c.keepaliveTimeMs), Timeout: ms(c.keepaliveTimeoutMs)}
	if c.maxConnAgeMs > 0 {
		c.keepalive.MaxConnectionAge = ms(c.maxConnAgeMs)
	}
	if c.maxConnAgeGraceMs > 0 {
		c.keepalive.MaxConnectionAgeGrace = ms(c.maxConnAgeGraceMs)
	}
	c.policy = keepalive.EnforcementPolicy{MinTime: ms(c.minRecvPingIntervalMs), PermitWithoutStream: c.permitWithoutCalls}
	return nil
}

// serverOptions are the transport credentials: TLS from certificate files
// re-read when they change, or none.
func (c *grpcConfig) serverOptions(log zerolog.Logger) ([]grpc.ServerOption, error) {
	cfg, err := c.tls.config(log, "h2")
	if err != nil || cfg == nil {
		return nil, err
	}
	return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(cfg))}, nil
}
