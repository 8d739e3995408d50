// Package traffic splits the requests for a model between variants —
// versions of it, or other models — for canary, A/B and blue/green
// releases, mirrors a fraction to a shadow candidate whose answers are
// compared and never returned, and takes a canary out when it does worse
// than the primary. The routes come from a JSON file (--traffic-config)
// that is re-read when it changes.
package traffic

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
)

// File is the routing file's shape.
//
//	{"routes": {"classifier": {
//	    "variants": [{"name": "stable", "model": "classifier", "version": "1", "weight": 90},
//	                 {"name": "canary", "model": "classifier", "version": "2", "weight": 10}],
//	    "sticky_parameter": "user",
//	    "shadow": {"model": "classifier", "version": "3", "fraction": 0.1, "tolerance": 1e-5},
//	    "rollback": {"window_secs": 60, "min_requests": 50, "error_rate_margin": 0.05, "p99_ratio": 2}}}}
type File struct {
	Routes map[string]RouteConfig `json:"routes"`
}

// RouteConfig is the split of one model name that clients call.
type RouteConfig struct {
	// Variants share the traffic by weight (they sum to 100); the first
	// is the primary, which a rollback never touches.
	Variants []VariantConfig `json:"variants"`
	// StickyParameter, when set, names a request parameter whose value
	// picks the variant, so that one user keeps one variant (a header
	// becomes a parameter with --http-header-forward-pattern).
	StickyParameter string `json:"sticky_parameter,omitempty"`
	// Shadow mirrors a fraction of the requests.
	Shadow *ShadowConfig `json:"shadow,omitempty"`
	// Rollback takes a variant that does worse than the primary out.
	Rollback *RollbackConfig `json:"rollback,omitempty"`
}

// VariantConfig is one destination of a route.
type VariantConfig struct {
	Name    string  `json:"name,omitempty"` // for metrics and logs; default model:version
	Model   string  `json:"model"`
	Version string  `json:"version,omitempty"` // "" the model's default
	Weight  float64 `json:"weight"`
}

// ShadowConfig mirrors requests to a candidate.
type ShadowConfig struct {
	Model    string  `json:"model"`
	Version  string  `json:"version,omitempty"`
	Fraction float64 `json:"fraction"`
	// Tolerance is the largest absolute difference between FP32 or FP64
	// elements still counted as equal; other types compare exactly.
	Tolerance float64 `json:"tolerance,omitempty"`
}

// RollbackConfig is the rule that sets a variant's weight to zero: over
// the last WindowSecs, with at least MinRequests on both sides, its error
// rate exceeds the primary's by ErrorRateMargin, or its p99 latency
// exceeds P99Ratio times the primary's (0: no latency rule).
type RollbackConfig struct {
	WindowSecs      int     `json:"window_secs"`
	MinRequests     int     `json:"min_requests"`
	ErrorRateMargin float64 `json:"error_rate_margin"`
	P99Ratio        float64 `json:"p99_ratio,omitempty"`
}

// Checker reports whether a model (and version, when not "") can be
// routed to; the server's repository answers it.
type Checker func(model, version string) error

// readFile parses and validates the routing file; every error names the
// file and the entry.
func readFile(path string, check Checker) (map[string]RouteConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("traffic config: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f File
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("traffic config %s: %w", path, err)
	}
	names := make([]string, 0, len(f.Routes))
	for n := range f.Routes {
		names = append(names, n)
	}
	sort.Strings(names)
	var errs []error
	for _, name := range names {
		if err := validateRoute(name, f.Routes[name], check); err != nil {
			errs = append(errs, fmt.Errorf("traffic config %s: route '%s': %w", path, name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return f.Routes, nil
}

func validateRoute(name string, rc RouteConfig, check Checker) error {
	if len(rc.Variants) == 0 {
		return errors.New("no variants")
	}
	sum := 0.0
	seen := map[string]bool{}
	for i, v := range rc.Variants {
		label := variantLabel(v)
		if v.Model == "" {
			return fmt.Errorf("variant %d has no model", i)
		}
		if seen[label] {
			return fmt.Errorf("variant '%s' appears twice", label)
		}
		seen[label] = true
		if math.IsNaN(v.Weight) || v.Weight < 0 {
			return fmt.Errorf("variant '%s' has weight %v: weights must not be negative", label, v.Weight)
		}
		if err := checkTarget(v.Model, v.Version, check); err != nil {
			return fmt.Errorf("variant '%s': %w", label, err)
		}
		sum += v.Weight
	}
	if math.Abs(sum-100) > 1e-6 {
		return fmt.Errorf("weights sum to %v, not 100", sum)
	}
	if s := rc.Shadow; s != nil {
		if s.Model == "" {
			return errors.New("shadow has no model")
		}
		if !(s.Fraction > 0 && s.Fraction <= 1) {
			return fmt.Errorf("shadow fraction %v is not in (0, 1]", s.Fraction)
		}
		if s.Tolerance < 0 || math.IsNaN(s.Tolerance) {
			return fmt.Errorf("shadow tolerance %v must not be negative", s.Tolerance)
		}
		if err := checkTarget(s.Model, s.Version, check); err != nil {
			return fmt.Errorf("shadow: %w", err)
		}
	}
	if r := rc.Rollback; r != nil {
		if r.WindowSecs <= 0 || r.MinRequests <= 0 {
			return errors.New("rollback needs a positive window_secs and min_requests")
		}
		if r.ErrorRateMargin < 0 || r.P99Ratio < 0 || (r.P99Ratio > 0 && r.P99Ratio < 1) {
			return errors.New("rollback margins must not be negative, and p99_ratio is 0 (off) or at least 1")
		}
	}
	_ = name
	return nil
}

func checkTarget(model, version string, check Checker) error {
	if version != "" {
		if n, err := strconv.ParseInt(version, 10, 64); err != nil || n < 0 {
			return fmt.Errorf("version '%s' is not a version number", version)
		}
	}
	if check != nil {
		return check(model, version)
	}
	return nil
}

func variantLabel(v VariantConfig) string {
	if v.Name != "" {
		return v.Name
	}
	if v.Version == "" {
		return v.Model
	}
	return v.Model + ":" + v.Version
}
