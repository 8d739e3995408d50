package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/nereid-project/nereid/batch"
)

// nereid batch runs a data set through a model (batch.Run): in process on
// the core nereid would serve, built from the server's flags, or against
// a running server by --url. Its own flags are a FlagSet of their own;
// every other flag is the server's and goes to parseFlags.

// batchConfig is nereid batch's flags.
type batchConfig struct {
	opts batch.Options
	url  string
}

func (c *batchConfig) register(fs *flag.FlagSet) {
	fs.StringVar(&c.opts.Model, "model", "", "the model, ensemble or pipeline to run (required)")
	fs.StringVar(&c.opts.ModelVersion, "model-version", "", "the model version (default: the one its version policy serves)")
	fs.StringVar(&c.opts.Input, "input", "", "a .jsonl, .ndjson or .csv file, or a directory of them: the records (required)")
	fs.StringVar(&c.opts.Output, "output", "", "directory of the results: <shard>.out.jsonl, <shard>.errors.jsonl and the job's manifest (required)")
	fs.StringVar(&c.url, "url", "", "run against the server at http://host:port (Nereid or Triton, KServe v2 HTTP) instead of in process")
	fs.IntVar(&c.opts.MaxConcurrency, "max-concurrency", batch.DefaultMaxConcurrency, "requests in flight at once")
	fs.IntVar(&c.opts.BatchSize, "batch-size", 0, "records per request, concatenated along the batch dimension when the model batches (0: the model's max_batch_size, at most 64)")
	fs.IntVar(&c.opts.SplitLines, "split-lines", 0, "records per shard, the unit a restarted job resumes from (0: a shard per file)")
	fs.Float64Var(&c.opts.MaxErrorFraction, "max-error-fraction", batch.DefaultMaxErrorFraction, "stop the job (resumably) when more than this share of the records fail")
}

// batchDefaults are the server flags of a job in process, before the
// user's (a later flag wins): load only the job's model, no metrics
// listener, and no informational logs over the progress line.
func batchDefaults(model string) []string {
	return []string{"--model-control-mode=explicit", "--load-model=" + model, "--allow-metrics=false", "--log-info=false"}
}

// splitBatchArgs separates batch's flags from the server's: a flag fs
// defines, with its value, is batch's; any other flag, with the word after
// it when that is not a flag, is the server's. Everything after "--" is
// the server's.
func splitBatchArgs(fs *flag.FlagSet, args []string) (own, server []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return own, append(server, args[i+1:]...)
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name == "" {
			own = append(own, a) // an argument: fs.Parse refuses it
			continue
		}
		takesNext := !hasValue && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-")
		if name == "help" || name == "h" {
			own = append(own, a) // fs.Parse prints the usage
			continue
		}
		if f := fs.Lookup(name); f != nil {
			if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
				takesNext = false
			}
			own = append(own, a)
			if takesNext {
				i++
				own = append(own, args[i])
			}
			continue
		}
		server = append(server, a)
		if takesNext {
			i++
			server = append(server, args[i])
		}
	}
	return own, server
}

// runBatch is `nereid batch`. It exits 0 when the job finished within
// its error budget, 1 when it failed or stopped, 2 on a usage error of
// its own flags and 130 when interrupted; a stopped or interrupted job resumes when run
// again.
func runBatch(args []string, stderr io.Writer) int {
	var c batchConfig
	fs := flag.NewFlagSet("nereid batch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.register(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: nereid batch --model M --input DIR|FILE.jsonl|FILE.csv --output DIR [--url http://host:port | server flags]")
		fs.PrintDefaults()
		fmt.Fprintln(stderr, "  In process (no --url) the other flags are the server's (nereid --help), --model-repository at least.")
	}
	own, serverArgs := splitBatchArgs(fs, args)
	if err := fs.Parse(own); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "error: batch: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if c.opts.Model == "" || c.opts.Input == "" || c.opts.Output == "" {
		fmt.Fprintln(stderr, "error: batch: --model, --input and --output are required")
		return 2
	}
	if c.url != "" && len(serverArgs) > 0 {
		fmt.Fprintf(stderr, "error: batch: %s: server flags have no effect with --url\n", strings.Join(serverArgs, " "))
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// A second signal ends the process at once.
	context.AfterFunc(ctx, stop)

	var target batch.Target
	if c.url != "" {
		t, err := batch.NewHTTP(c.url, batch.HTTPOptions{MaxConns: c.opts.MaxConcurrency})
		if err != nil {
			fmt.Fprintln(stderr, "error: batch:", err)
			return 2
		}
		target = t
	} else {
		p, _, _, closeAll, err := openInProcess(ctx, append(batchDefaults(c.opts.Model), serverArgs...), stderr)
		if err != nil {
			if errors.Is(err, errHelp) {
				return 0
			}
			fmt.Fprintln(stderr, "error: batch:", err)
			return 1
		}
		defer closeAll()
		target = batch.InProcess(p.core)
	}

	c.opts.Progress = stderr
	if f, ok := stderr.(*os.File); ok {
		if st, err := f.Stat(); err == nil {
			c.opts.Terminal = st.Mode()&os.ModeCharDevice != 0
		}
	}
	sum, err := batch.Run(ctx, target, c.opts)
	if sum.Elapsed > 0 { // the job ran
		fmt.Fprintln(stderr, "batch:", sum)
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(stderr, "batch: interrupted; run the same command again to resume (finished shards are kept)")
		return 130
	default:
		fmt.Fprintln(stderr, "error: batch:", err)
		return 1
	}
}
