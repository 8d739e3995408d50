package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nereid-project/nereid/analyze"
)

// nereid analyze sweeps one model's configurations (dynamic batching,
// instance count, client concurrency) against an in-process core or a
// server by URL, and writes a report with the configuration that meets a
// latency budget at the least cost. Flags after `--` are the server's, for
// the in-process core (--backend-config=..., say).

// analyzeFlags are nereid analyze's settings.
type analyzeFlags struct {
	model      string
	repository string
	url        string
	output     string
	opts       analyze.Options
	server     []string // the in-process server's own flags
}

func parseAnalyzeFlags(args []string, stderr io.Writer) (*analyzeFlags, error) {
	a := &analyzeFlags{}
	if i := slices.Index(args, "--"); i >= 0 {
		args, a.server = args[:i], args[i+1:]
	}
	space := analyze.DefaultSpace(runtime.NumCPU())
	fs := flag.NewFlagSet("nereid analyze", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: nereid analyze --model M (--model-repository DIR | --url host:port) [flags] [-- server flags]")
		fs.PrintDefaults()
	}
	fs.StringVar(&a.model, "model", "", "the model to analyze (required)")
	fs.StringVar(&a.repository, "model-repository", "", "run an in-process Nereid over this model repository")
	fs.StringVar(&a.url, "url", "", "measure a running Nereid or Triton at host:port (HTTP) instead")
	fs.StringVar(&a.output, "output", "", "directory for report.json, report.md and report.svg (default analyze-<model>)")
	budget := fs.Float64("latency-budget-ms", 0, "p99 latency the recommendation must meet, in ms (0: none, recommend the highest throughput)")
	fs.DurationVar(&a.opts.Window, "window", 2*time.Second, "how long each point is measured")
	fs.DurationVar(&a.opts.Warmup, "warmup", 500*time.Millisecond, "how long each point runs before it is measured")
	instances := fs.String("instances", joinInts(space.Instances), "instance counts to sweep")
	batches := fs.String("max-batch-sizes", joinInts(space.MaxBatchSizes), "max batch sizes to sweep (1: no dynamic batching; sizes above the model's max_batch_size are left out)")
	delays := fs.String("queue-delays-us", joinInts(space.QueueDelaysUS), "max_queue_delay_microseconds values to sweep")
	concurrency := fs.String("concurrency", joinInts(space.Concurrency), "client concurrency levels to measure each configuration at")
	fs.BoolVar(&a.opts.ConcurrencyOnly, "concurrency-only", false, "measure the model as it is loaded, at each concurrency level, without reloading it")
	fs.IntVar(&a.opts.RequestBatchSize, "request-batch-size", 1, "batch dimension of each request (models that batch)")
	fs.Int64Var(&a.opts.DimSize, "dim-size", 1, "size given to variable (-1) input dimensions")
	fs.Uint64Var(&a.opts.Seed, "seed", 1, "seed of the random input data")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, errHelp
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (server flags go after --)", fs.Arg(0))
	}
	var errs []error
	if a.model == "" {
		errs = append(errs, errors.New("--model is required"))
	}
	switch {
	case a.url == "" && a.repository == "":
		errs = append(errs, errors.New("give --model-repository (in-process) or --url (a running server)"))
	case a.url != "" && a.repository != "":
		errs = append(errs, errors.New("--model-repository and --url exclude each other"))
	case a.url != "" && len(a.server) > 0:
		errs = append(errs, errors.New("server flags after -- are for the in-process server; with --url the server is already running"))
	}
	if *budget < 0 {
		errs = append(errs, fmt.Errorf("--latency-budget-ms %g must not be negative", *budget))
	}
	a.opts.LatencyBudget = time.Duration(*budget * float64(time.Millisecond))
	if a.opts.Window <= 0 {
		errs = append(errs, fmt.Errorf("--window %s must be positive", a.opts.Window))
	}
	if a.opts.Warmup < 0 {
		errs = append(errs, fmt.Errorf("--warmup %s must not be negative", a.opts.Warmup))
	} else if a.opts.Warmup == 0 {
		a.opts.Warmup = -1 // none, rather than the default
	}
	if a.opts.RequestBatchSize <= 0 || a.opts.DimSize <= 0 {
		errs = append(errs, errors.New("--request-batch-size and --dim-size must be positive"))
	}
	var err error
	if space.Instances, err = parseInts[int]("instances", *instances, 1); err != nil {
		errs = append(errs, err)
	}
	if space.MaxBatchSizes, err = parseInts[int]("max-batch-sizes", *batches, 1); err != nil {
		errs = append(errs, err)
	}
	if space.QueueDelaysUS, err = parseInts[uint64]("queue-delays-us", *delays, 0); err != nil {
		errs = append(errs, err)
	}
	if space.Concurrency, err = parseInts[int]("concurrency", *concurrency, 1); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	a.opts.Model, a.opts.Space = a.model, space
	if a.output == "" {
		a.output = "analyze-" + filepath.Base(a.model)
	}
	return a, nil
}

// parseInts parses a comma-separated list of integers of at least least.
func parseInts[T int | uint64](flagName, s string, least T) ([]T, error) {
	var out []T
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.ParseUint(f, 10, 63)
		if err != nil || T(n) < least {
			return nil, fmt.Errorf("--%s: %q is not an integer of at least %d", flagName, f, least)
		}
		out = append(out, T(n))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--%s: no values", flagName)
	}
	return out, nil
}

func joinInts[T int | uint64](xs []T) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.FormatUint(uint64(x), 10)
	}
	return strings.Join(parts, ",")
}

// runAnalyze is `nereid analyze`: progress on stderr, the table on
// stdout, the report files in --output.
func runAnalyze(args []string, stdout, stderr io.Writer) int {
	a, err := parseAnalyzeFlags(args, stderr)
	if err != nil {
		if errors.Is(err, errHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "error: analyze:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	a.opts.Progress = stderr
	a.opts.Command = strings.Join(append([]string{"nereid", "analyze"}, args...), " ")

	var target analyze.Target
	if a.url != "" {
		t, err := analyze.NewHTTP(a.url, slices.Max(a.opts.Space.Concurrency))
		if err != nil {
			fmt.Fprintln(stderr, "error: analyze:", err)
			return 2
		}
		defer t.Close()
		if err := t.Live(ctx, 5*time.Second); err != nil {
			fmt.Fprintln(stderr, "error: analyze: the server does not answer:", err)
			return 1
		}
		target = t
	} else {
		// The in-process core serves the one model, loaded at start,
		// with the load-with-configuration path of explicit mode, and no
		// listeners; it logs warnings and errors only unless the server
		// flags after -- say otherwise (a later flag wins).
		serverArgs := append([]string{
			"--model-repository=" + a.repository, "--model-control-mode=explicit", "--load-model=" + a.model,
			"--allow-http=false", "--allow-grpc=false", "--allow-metrics=false", "--log-info=false",
		}, a.server...)
		p, _, _, closeAll, err := openInProcess(ctx, serverArgs, stderr)
		if err != nil {
			if errors.Is(err, errHelp) {
				return 0
			}
			fmt.Fprintln(stderr, "error: analyze:", err)
			return 1
		}
		defer closeAll()
		target = analyze.NewInProcess(p.core)
	}

	rep, err := analyze.Run(ctx, target, a.opts)
	if rep == nil {
		fmt.Fprintln(stderr, "error: analyze:", err)
		return 1
	}
	exit := 0
	if err != nil { // interrupted: report the points measured so far
		fmt.Fprintln(stderr, "analyze:", err, "- writing the report of the points measured so far")
		exit = 1
	}
	fmt.Fprintln(stdout)
	analyze.WriteTable(stdout, rep)
	if err := analyze.WriteFiles(a.output, rep); err != nil {
		fmt.Fprintln(stderr, "error: analyze: writing the report:", err)
		return 1
	}
	fmt.Fprintf(stderr, "report: %s\n", strings.Join([]string{
		filepath.Join(a.output, analyze.JSONFile), filepath.Join(a.output, analyze.MarkdownFile), filepath.Join(a.output, analyze.PlotFile),
	}, ", "))
	return exit
}
