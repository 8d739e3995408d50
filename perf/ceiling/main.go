// Command ceiling is the performance harness's bound: a minimal server
// that speaks the KServe v2 / Triton protocol over HTTP (fasthttp) and
// gRPC (grpc-go) for the example models `simple` and `identity_fp32`, and
// does the least work a correct server can do: decode the request, compute
// the sum / difference or identity in place in the request's buffers, and
// encode the response. No scheduler, no statistics, no logging per request.
// perf/run measures it with the same perf_analyzer settings as Nereid and
// its peers; no real server on the same machine should beat it.
//
//	go run ./perf/ceiling --http-port=8000 --grpc-port=8001
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
	"google.golang.org/grpc"

	"github.com/nereid-project/nereid/proto/inferencepb"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "ceiling:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("ceiling", flag.ContinueOnError)
	httpPort := fs.Int("http-port", 8000, "HTTP port")
	grpcPort := fs.Int("grpc-port", 8001, "gRPC port")
	address := fs.String("address", "0.0.0.0", "listen address")
	names := fs.String("models", "simple,identity_fp32", "comma-separated models to serve (of: "+strings.Join(known(), ", ")+")")
	if err := fs.Parse(args); err != nil {
		return err
	}
	served, err := selectModels(*names)
	if err != nil {
		return err
	}

	hl, err := net.Listen("tcp", net.JoinHostPort(*address, fmt.Sprint(*httpPort)))
	if err != nil {
		return err
	}
	gl, err := net.Listen("tcp", net.JoinHostPort(*address, fmt.Sprint(*grpcPort)))
	if err != nil {
		_ = hl.Close()
		return err
	}
	hs := &fasthttp.Server{
		Handler:               newHTTPFront(served).handle,
		Name:                  "ceiling",
		NoDefaultDate:         true,
		NoDefaultServerHeader: true,
		MaxRequestBodySize:    64 << 20,
	}
	// Reused goroutines for calls, as cmd/nereid does: the ceiling must not
	// pay for stack growth that a real server avoids.
	gs := grpc.NewServer(grpc.MaxRecvMsgSize(64<<20), grpc.NumStreamWorkers(64))
	inferencepb.RegisterGRPCInferenceServiceServer(gs, &grpcFront{models: served})

	errc := make(chan error, 2)
	go func() { errc <- hs.Serve(hl) }()
	go func() { errc <- gs.Serve(gl) }()
	fmt.Fprintf(os.Stderr, "ceiling: serving %s on HTTP %s and gRPC %s\n", *names, hl.Addr(), gl.Addr())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	select {
	case s := <-sig:
		fmt.Fprintf(os.Stderr, "ceiling: %v, shutting down\n", s)
		err = nil
	case err = <-errc:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	herr := hs.ShutdownWithContext(ctx)
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-ctx.Done():
		gs.Stop()
		<-stopped
	}
	return errors.Join(err, herr)
}

func known() []string {
	names := make([]string, 0, len(models))
	for n := range models {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func selectModels(list string) (map[string]*model, error) {
	served := map[string]*model{}
	for _, name := range strings.Split(list, ",") {
		if name = strings.TrimSpace(name); name == "" {
			continue
		}
		m := models[name]
		if m == nil {
			return nil, fmt.Errorf("unknown model %q (the ceiling serves %s)", name, strings.Join(known(), ", "))
		}
		m.init()
		served[name] = m
	}
	if len(served) == 0 {
		return nil, errors.New("no models to serve")
	}
	return served, nil
}
