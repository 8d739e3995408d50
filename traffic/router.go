package traffic

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/inference"
)

// reloadEvery is how often Run looks at the routing file.
const reloadEvery = time.Second

// windowSamples bounds the samples a variant keeps for the rollback rule.
const windowSamples = 4096

// Options configures a Router.
type Options struct {
	Check   Checker
	Logger  zerolog.Logger
	Metrics *Metrics // nil: none
	// MaxShadows bounds the mirrored requests running at once; more are
	// dropped (and counted). 0 means 8.
	MaxShadows int
}

// Router holds the routes of one routing file.
type Router struct {
	path string
	opts Options
	log  zerolog.Logger

	mu     sync.RWMutex
	routes map[string]*route
	stamp  fileStamp

	shadows chan struct{} // slots of mirrored requests
	wg      sync.WaitGroup
	rng     func() float64
}

type fileStamp struct {
	mod  time.Time
	size int64
}

// route is the live state of one route.
type route struct {
	name     string
	cfg      RouteConfig
	variants []*variant

	mu sync.Mutex // guards every variant's weight, rolledBack and samples
}

type variant struct {
	label      string
	cfg        VariantConfig
	weight     float64
	rolledBack bool
	samples    []sample // ring
	next       int
	count      int // samples since the last rollback check
}

type sample struct {
	at     time.Time
	took   time.Duration
	failed bool
}

// New reads the routing file. The error names the file and entry.
func New(path string, opts Options) (*Router, error) {
	if opts.MaxShadows <= 0 {
		opts.MaxShadows = 8
	}
	r := &Router{path: path, opts: opts, log: opts.Logger.With().Str("component", "traffic").Logger(),
		shadows: make(chan struct{}, opts.MaxShadows), rng: rand.Float64}
	if err := r.reload(); err != nil {
		return nil, err
	}
	return r, nil
}

func stampOf(path string) (fileStamp, error) {
	st, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{st.ModTime(), st.Size()}, nil
}

// reload reads the file and replaces every route; counters and rollbacks
// start afresh.
func (r *Router) reload() error {
	stamp, err := stampOf(r.path)
	if err != nil {
		return fmt.Errorf("traffic config: %w", err)
	}
	cfgs, err := readFile(r.path, r.opts.Check)
	if err != nil {
		return err
	}
	routes := make(map[string]*route, len(cfgs))
	for name, rc := range cfgs {
		rt := &route{name: name, cfg: rc}
		for _, vc := range rc.Variants {
			v := &variant{label: variantLabel(vc), cfg: vc, weight: vc.Weight}
			rt.variants = append(rt.variants, v)
			r.opts.Metrics.weight(name, v.label, v.weight)
		}
		routes[name] = rt
	}
	r.mu.Lock()
	r.routes, r.stamp = routes, stamp
	r.mu.Unlock()
	r.log.Info().Str("file", r.path).Int("routes", len(routes)).Msg("traffic routes loaded")
	return nil
}

// Run re-reads the routing file when it changes, until ctx is done. A file
// that no longer validates keeps the routes in force (and is logged).
func (r *Router) Run(ctx context.Context) {
	t := time.NewTicker(reloadEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			stamp, err := stampOf(r.path)
			r.mu.RLock()
			same := err == nil && stamp == r.stamp
			r.mu.RUnlock()
			if same {
				continue
			}
			if err := r.reload(); err != nil {
				r.log.Error().Err(err).Msg("traffic config not reloaded: the routes in force stay")
				r.mu.Lock()
				r.stamp = stamp // report a broken file once
				r.mu.Unlock()
			}
		}
	}
}

// Close waits for the mirrored requests still running.
func (r *Router) Close() { r.wg.Wait() }

// Decision is where one request goes.
type Decision struct {
	r       *Router
	route   *route
	variant *variant
	start   time.Time
	mirror  bool
}

// Route picks the variant for a request that names a route and no version;
// nil when the request is not routed.
func (r *Router) Route(req *inference.Request) *Decision {
	if req.ModelVersion != "" {
		return nil
	}
	r.mu.RLock()
	rt := r.routes[req.ModelName]
	r.mu.RUnlock()
	if rt == nil {
		return nil
	}
	u := r.rng()
	if p := rt.cfg.StickyParameter; p != "" {
		if key, ok := stickyKey(req.Parameters, p); ok {
			h := fnv.New64a()
			h.Write([]byte(key))
			u = float64(h.Sum64()>>11) / (1 << 53)
		}
	}
	rt.mu.Lock()
	v := rt.pickLocked(u)
	rt.mu.Unlock()
	d := &Decision{r: r, route: rt, variant: v, start: time.Now()}
	if s := rt.cfg.Shadow; s != nil && r.rng() < s.Fraction {
		d.mirror = true
	}
	return d
}

func stickyKey(p inference.Parameters, name string) (string, bool) {
	switch v := p[name].(type) {
	case string:
		return v, true
	case int64, uint64, bool:
		return fmt.Sprint(v), true
	}
	return "", false
}

// pickLocked chooses by weight; u is uniform in [0, 1). With every weight
// at zero (all rolled back, or a blue/green switch in progress), the
// primary serves.
func (rt *route) pickLocked(u float64) *variant {
	total := 0.0
	for _, v := range rt.variants {
		total += v.weight
	}
	if total <= 0 {
		return rt.variants[0]
	}
	x := u * total
	for _, v := range rt.variants {
		if x < v.weight {
			return v
		}
		x -= v.weight
	}
	for i := len(rt.variants) - 1; i >= 0; i-- { // rounding: the last with weight
		if rt.variants[i].weight > 0 {
			return rt.variants[i]
		}
	}
	return rt.variants[0]
}

// Target is the model and version the request goes to.
func (d *Decision) Target() (model, version string) {
	return d.variant.cfg.Model, d.variant.cfg.Version
}

// Mirror reports whether this request is mirrored, and to what.
func (d *Decision) Mirror() (model, version string, ok bool) {
	if !d.mirror {
		return "", "", false
	}
	s := d.route.cfg.Shadow
	return s.Model, s.Version, true
}

// Done records the outcome of the routed request and applies the
// rollback rule.
func (d *Decision) Done(err error) {
	took := time.Since(d.start)
	d.r.opts.Metrics.request(d.route.name, d.variant.label, took, err)
	rb := d.route.cfg.Rollback
	if rb == nil {
		return
	}
	rt := d.route
	rt.mu.Lock()
	defer rt.mu.Unlock()
	v := d.variant
	s := sample{at: time.Now(), took: took, failed: err != nil}
	if len(v.samples) < windowSamples {
		v.samples = append(v.samples, s)
	} else {
		v.samples[v.next] = s
		v.next = (v.next + 1) % windowSamples
	}
	if v == rt.variants[0] || v.rolledBack {
		return
	}
	if v.count++; v.count < 10 { // evaluate every tenth sample of a canary
		return
	}
	v.count = 0
	primary := rt.variants[0]
	since := s.at.Add(-time.Duration(rb.WindowSecs) * time.Second)
	pn, perr, pp99 := window(primary.samples, since)
	vn, verr, vp99 := window(v.samples, since)
	if pn < rb.MinRequests || vn < rb.MinRequests {
		return
	}
	var why string
	switch {
	case verr > perr+rb.ErrorRateMargin:
		why = fmt.Sprintf("error rate %.3f against the primary's %.3f (margin %.3f)", verr, perr, rb.ErrorRateMargin)
	case rb.P99Ratio > 0 && vp99 > time.Duration(float64(pp99)*rb.P99Ratio):
		why = fmt.Sprintf("p99 %v against the primary's %v (ratio %.2f)", vp99, pp99, rb.P99Ratio)
	default:
		return
	}
	v.rolledBack, v.weight = true, 0
	d.r.opts.Metrics.rolledBack(rt.name, v.label)
	d.r.opts.Metrics.weight(rt.name, v.label, 0)
	d.r.log.Warn().Str("route", rt.name).Str("variant", v.label).Str("reason", why).
		Msg("rollback: the variant's weight is now 0")
}

// window summarizes the samples taken since: count, error rate, p99.
func window(samples []sample, since time.Time) (int, float64, time.Duration) {
	var took []time.Duration
	failed := 0
	for _, s := range samples {
		if s.at.Before(since) {
			continue
		}
		took = append(took, s.took)
		if s.failed {
			failed++
		}
	}
	if len(took) == 0 {
		return 0, 0, 0
	}
	slices.Sort(took)
	idx := int(math.Ceil(0.99*float64(len(took)))) - 1
	return len(took), float64(failed) / float64(len(took)), took[max(idx, 0)]
}

// Weights reports the current weight of each variant of a route, by
// label (for tests and logs).
func (r *Router) Weights(route string) map[string]float64 {
	r.mu.RLock()
	rt := r.routes[route]
	r.mu.RUnlock()
	if rt == nil {
		return nil
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	out := map[string]float64{}
	for _, v := range rt.variants {
		out[v.label] = v.weight
	}
	return out
}

// Shadow runs a mirrored request on its own goroutine, owned by the
// Router: run executes it, and its response is compared with the
// primary's (already copied by the caller). A mirror that finds every slot
// taken is dropped.
func (r *Router) Shadow(d *Decision, primary *inference.Response, run func() (*inference.Response, error)) {
	select {
	case r.shadows <- struct{}{}:
	default:
		r.opts.Metrics.shadow(d.route.name, "dropped")
		return
	}
	r.wg.Go(func() {
		defer func() { <-r.shadows }()
		resp, err := run()
		if err != nil {
			r.opts.Metrics.shadow(d.route.name, "error")
			r.log.Debug().Str("route", d.route.name).Err(err).Msg("shadow request failed")
			return
		}
		defer resp.Done()
		if diff := Compare(primary, resp, d.route.cfg.Shadow.Tolerance); diff != "" {
			r.opts.Metrics.shadow(d.route.name, "diverged")
			r.log.Debug().Str("route", d.route.name).Str("difference", diff).Msg("shadow diverged")
			return
		}
		r.opts.Metrics.shadow(d.route.name, "matched")
	})
}

// Compare reports how two responses differ ("" when they agree): the
// same outputs, datatypes and shapes, and elements equal, floating-point
// ones within tol.
func Compare(a, b *inference.Response, tol float64) string {
	if len(a.Outputs) != len(b.Outputs) {
		return fmt.Sprintf("%d outputs against %d", len(a.Outputs), len(b.Outputs))
	}
	for _, x := range a.Outputs {
		var y *inference.Tensor
		for i := range b.Outputs {
			if b.Outputs[i].Name == x.Name {
				y = &b.Outputs[i]
			}
		}
		switch {
		case y == nil:
			return fmt.Sprintf("output '%s' missing", x.Name)
		case x.DataType != y.DataType || !slices.Equal(x.Shape, y.Shape):
			return fmt.Sprintf("output '%s': %s %v against %s %v", x.Name, x.DataType, x.Shape, y.DataType, y.Shape)
		case len(x.Data) != len(y.Data):
			return fmt.Sprintf("output '%s': %d bytes against %d", x.Name, len(x.Data), len(y.Data))
		}
		if i, ok := firstDifference(x.DataType, x.Data, y.Data, tol); !ok {
			return fmt.Sprintf("output '%s' differs at element %d", x.Name, i)
		}
	}
	return ""
}

func firstDifference(dt inference.DataType, a, b []byte, tol float64) (int, bool) {
	switch dt {
	case inference.FP32:
		for i := 0; i+4 <= len(a); i += 4 {
			x := math.Float32frombits(binary.LittleEndian.Uint32(a[i:]))
			y := math.Float32frombits(binary.LittleEndian.Uint32(b[i:]))
			if !near(float64(x), float64(y), tol) {
				return i / 4, false
			}
		}
		return 0, true
	case inference.FP64:
		for i := 0; i+8 <= len(a); i += 8 {
			x := math.Float64frombits(binary.LittleEndian.Uint64(a[i:]))
			y := math.Float64frombits(binary.LittleEndian.Uint64(b[i:]))
			if !near(x, y, tol) {
				return i / 8, false
			}
		}
		return 0, true
	default: // every other type compares byte for byte
		for i := range a {
			if a[i] != b[i] {
				return i, false
			}
		}
		return 0, true
	}
}

func near(x, y, tol float64) bool {
	if math.IsNaN(x) || math.IsNaN(y) {
		return math.IsNaN(x) && math.IsNaN(y)
	}
	return math.Abs(x-y) <= tol
}
