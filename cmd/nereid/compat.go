package main

import (
	"errors"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Triton flags that Nereid has no use for. None is accepted silently:
// each either changes nothing Nereid does (it is tuning for Triton's own
// thread pools, memory pools or plug-in directories) and is listed in one
// warning line at start, or asks for behaviour Nereid does not have and
// makes it exit naming the flag, unless it is given its Triton default.

// warnedFlags change nothing in Nereid, whatever their value.
var warnedFlags = map[string]string{
	"http-thread-count":                "fasthttp serves each connection on its own goroutine",
	"grpc-infer-thread-count":          "grpc-go serves each call on its own goroutine",
	"grpc-infer-allocation-pool-size":  "Nereid pools its gRPC buffers by size",
	"grpc-max-response-pool-size":      "Nereid pools its gRPC buffers by size",
	"reuse-http-port":                  "a second server on the same port fails to start",
	"reuse-grpc-port":                  "a second server on the same port fails to start",
	"pinned-memory-pool-byte-size":     "no CUDA pinned memory pool",
	"cuda-memory-pool-byte-size":       "no CUDA memory pool",
	"cuda-virtual-address-size":        "no CUDA virtual memory",
	"buffer-manager-thread-count":      "tensors are copied by the request's goroutine",
	"host-policy":                      "no NUMA placement",
	"backend-directory":                "Nereid's backends are built in",
	"repoagent-directory":              "no repository agent plug-ins",
	"cache-directory":                  "the response cache is built in",
	"min-supported-compute-capability": "no CUDA kernels of Nereid's own",
	"enable-peer-access":               "no CUDA peer copies",
	"vertex-ai-port":                   "no Vertex AI front end",
	"vertex-ai-default-model":          "no Vertex AI front end",
	"vertex-ai-thread-count":           "no Vertex AI front end",
}

// refusedFlags name behaviour Nereid does not implement: set to anything
// but the default given here, they stop the start.
var refusedFlags = map[string]struct{ def, why string }{
	"model-namespacing":    {"false", "model namespacing is not implemented: a model name must be unique across the repositories"},
	"model-load-gpu-limit": {"", "GPU memory limits on loads are not implemented (--model-cache-memory bounds host memory)"},
	"allow-vertex-ai":      {"false", "the Vertex AI front end is not implemented"},
}

// compatFlags registers the warned and refused flags on fs.
func compatFlags(fs *flag.FlagSet) {
	for name, why := range warnedFlags {
		fs.String(name, "", "accepted for Triton launch scripts; no effect in Nereid ("+why+")")
	}
	for name, r := range refusedFlags {
		fs.String(name, r.def, "not implemented: refused unless "+strconv.Quote(r.def)+" ("+r.why+")")
	}
}

// checkCompatFlags refuses the refused flags set to other than their
// default and returns the warned flags that were given, sorted.
func checkCompatFlags(fs *flag.FlagSet) (warned []string, err error) {
	var refused []string
	fs.Visit(func(f *flag.Flag) {
		if _, ok := warnedFlags[f.Name]; ok {
			warned = append(warned, "--"+f.Name)
			return
		}
		r, ok := refusedFlags[f.Name]
		if !ok || sameValue(f.Value.String(), r.def) {
			return
		}
		refused = append(refused, fmt.Sprintf("--%s=%s: %s", f.Name, f.Value.String(), r.why))
	})
	if len(refused) > 0 {
		slices.Sort(refused)
		return nil, fmt.Errorf("%s", strings.Join(refused, "; "))
	}
	if err := checkLoadModel(fs); err != nil {
		return nil, err
	}
	slices.Sort(warned)
	return warned, nil
}

// errLoadModelMode is Triton's refusal (since 24.06) of --load-model
// outside explicit mode, where the flag used to be ignored and every
// model loaded.
var errLoadModelMode = errors.New("Use of '--load-model' requires setting '--model-control-mode=explicit' as well.") //nolint:revive,staticcheck // Triton's text

// checkLoadModel refuses --load-model unless --model-control-mode=explicit.
func checkLoadModel(fs *flag.FlagSet) error {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "load-model" })
	if !given {
		return nil
	}
	if m := fs.Lookup("model-control-mode"); m != nil && m.Value.String() == "explicit" {
		return nil
	}
	return errLoadModelMode
}

// sameValue compares a flag value with a default, reading booleans as
// Triton does (true/false, 1/0).
func sameValue(v, def string) bool {
	if v == def {
		return true
	}
	a, errA := strconv.ParseBool(v)
	b, errB := strconv.ParseBool(def)
	return errA == nil && errB == nil && a == b
}
