// Package ratelimit is Triton's rate limiter (--rate-limit=execution_count).
// Model instances declare, in their instance group's rate_limiter, the
// resources one execution needs; an instance executes only while those
// resources are free, and among the instances waiting for resources the one
// with the fewest executions, scaled by its priority, goes first. The limiter
// is shared by every model of the server, which is what makes cross-model
// prioritisation possible.
package ratelimit

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/nereid-project/nereid/inference"
)

// Mode is the value of --rate-limit.
type Mode int

// The rate limiting modes.
const (
	// Off runs an execution as soon as an instance is free.
	Off Mode = iota
	// ExecutionCount honours resources and priorities.
	ExecutionCount
)

// ParseMode parses --rate-limit.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "off":
		return Off, nil
	case "execution_count":
		return ExecutionCount, nil
	}
	return Off, fmt.Errorf("--rate-limit: %q is not one of off, execution_count", s)
}

// AnyDevice is the Device of a resource given without a device: it applies
// to every device.
const AnyDevice = -1

// Resource is one --rate-limit-resource=<name>:<count>[:<device>]: how many
// copies of a resource exist, on one device or (AnyDevice) on each.
type Resource struct {
	Name   string
	Count  uint64
	Device int
}

// ParseResource parses one --rate-limit-resource value.
func ParseResource(s string) (Resource, error) {
	parts := strings.Split(s, ":")
	bad := fmt.Errorf("--rate-limit-resource: %q is not <name>:<count> or <name>:<count>:<device>", s)
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" {
		return Resource{}, bad
	}
	count, err := strconv.ParseUint(parts[1], 10, 32)
	if err != nil {
		return Resource{}, bad
	}
	r := Resource{Name: parts[0], Count: count, Device: AnyDevice}
	if len(parts) == 3 {
		dev, err := strconv.ParseUint(parts[2], 10, 31)
		if err != nil {
			return Resource{}, bad
		}
		r.Device = int(dev)
	}
	return r, nil
}

// Options configures a Limiter.
type Options struct {
	Mode Mode
	// Resources are the explicit resource counts. A resource not listed has
	// as many copies as the most demanding registered instance needs.
	Resources []Resource
}

// Need is one resource an instance's execution takes, from its instance
// group's rate_limiter.
type Need struct {
	Name   string
	Global bool // one pool for the whole server rather than one per device
	Count  uint64
}

// InstanceConfig describes one model instance to the limiter.
type InstanceConfig struct {
	Name     string // for error messages
	Device   int    // the device whose resources it takes
	Priority uint32 // rate_limiter.priority; 0 counts as 1
	Needs    []Need
}

// globalDevice is the device key of global resources.
const globalDevice = -2

type key struct {
	name   string
	device int
}

// Limiter admits executions. The zero value is not usable; build it with New.
type Limiter struct {
	opts Options

	mu        sync.Mutex // guards the fields below
	instances map[*Instance]struct{}
	limits    map[key]uint64 // copies of each resource
	used      map[key]uint64 // copies taken by running executions
	waiting   []*waiter      // in arrival order
	nextSeq   uint64
}

// New returns a limiter. In mode Off it admits every execution at once.
func New(opts Options) *Limiter {
	return &Limiter{
		opts:      opts,
		instances: map[*Instance]struct{}{},
		limits:    map[key]uint64{},
		used:      map[key]uint64{},
	}
}

// Enabled reports whether executions go through the limiter.
func (l *Limiter) Enabled() bool { return l != nil && l.opts.Mode == ExecutionCount }

// Instance is one registered model instance.
type Instance struct {
	l        *Limiter
	name     string
	priority uint64
	needs    map[key]uint64
	execs    uint64 // guarded by l.mu
}

// Group is the registered instances of one model version, in the order the
// scheduler knows them. It satisfies scheduler.Gate.
type Group []*Instance

// Acquire blocks until instance i may execute, or ctx ends.
func (g Group) Acquire(ctx context.Context, i int) error { return g[i].Acquire(ctx) }

// Release ends the execution Acquire admitted.
func (g Group) Release(i int) { g[i].Release() }

// Register adds a model version's instances, all or none. It fails with
// Triton's message when an explicit resource count is below what an
// instance needs. With the limiter off it returns nil: nothing to gate.
func (l *Limiter) Register(cfgs []InstanceConfig) (Group, error) {
	if !l.Enabled() {
		return nil, nil
	}
	g := make(Group, len(cfgs))
	for i, c := range cfgs {
		in := &Instance{l: l, name: c.Name, priority: uint64(max(c.Priority, 1)), needs: map[key]uint64{}}
		for _, n := range c.Needs {
			k := key{name: n.Name, device: c.Device}
			if n.Global {
				k.device = globalDevice
			}
			in.needs[k] = n.Count
		}
		g[i] = in
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, in := range g {
		l.instances[in] = struct{}{}
	}
	if err := l.computeLimitsLocked(); err != nil {
		for _, in := range g {
			delete(l.instances, in)
		}
		_ = l.computeLimitsLocked()
		return nil, err
	}
	return g, nil
}

// Unregister removes a model version's instances once they no longer run.
func (l *Limiter) Unregister(g Group) {
	if len(g) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, in := range g {
		delete(l.instances, in)
	}
	_ = l.computeLimitsLocked()
	l.grantLocked()
}

// computeLimitsLocked sets each resource's copies: the explicit count when
// one is given, else the largest need among the instances; and checks that
// every instance can run.
func (l *Limiter) computeLimitsLocked() error {
	maxNeed := map[key]uint64{}
	for in := range l.instances {
		for k, n := range in.needs {
			maxNeed[k] = max(maxNeed[k], n)
		}
	}
	limits := make(map[key]uint64, len(maxNeed))
	keys := make([]key, 0, len(maxNeed))
	for k := range maxNeed {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].name != keys[j].name {
			return keys[i].name < keys[j].name
		}
		return keys[i].device < keys[j].device
	})
	for _, k := range keys {
		limit, explicit := l.explicitLocked(k)
		if !explicit {
			limit = maxNeed[k]
		}
		if limit < maxNeed[k] {
			return inference.InvalidArg("Resource count for \"%s\" is limited to %d which will prevent scheduling of one or more model instances, the minimum required count is %d",
				k.name, limit, maxNeed[k])
		}
		limits[k] = limit
	}
	l.limits = limits
	return nil
}

// explicitLocked returns the --rate-limit-resource count for k: for a
// per-device resource the entry for its device, else the entry for every
// device; for a global resource the largest entry of that name.
func (l *Limiter) explicitLocked(k key) (uint64, bool) {
	var (
		anyDev, exact, global   uint64
		found, hasAny, hasExact bool
	)
	for _, r := range l.opts.Resources {
		if r.Name != k.name {
			continue
		}
		found = true
		global = max(global, r.Count)
		switch r.Device {
		case AnyDevice:
			anyDev, hasAny = r.Count, true
		case k.device:
			exact, hasExact = r.Count, true
		}
	}
	switch {
	case k.device == globalDevice:
		return global, found
	case hasExact:
		return exact, true
	case hasAny:
		return anyDev, true
	}
	return 0, false
}

type waiter struct {
	in      *Instance
	seq     uint64
	ready   chan struct{} // closed once granted
	granted bool
}

// Acquire blocks until the instance's resources are taken for one
// execution, or ctx ends (then nothing is held).
func (in *Instance) Acquire(ctx context.Context) error {
	l := in.l
	l.mu.Lock()
	w := &waiter{in: in, seq: l.nextSeq, ready: make(chan struct{})}
	l.nextSeq++
	l.waiting = append(l.waiting, w)
	l.grantLocked()
	if w.granted {
		l.mu.Unlock()
		return nil
	}
	l.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		l.mu.Lock()
		defer l.mu.Unlock()
		if w.granted {
			// Granted while giving up: hand the resources on.
			l.freeLocked(in)
		} else {
			l.removeLocked(w)
		}
		l.grantLocked()
		return ctx.Err()
	}
}

// Release returns the resources of an execution that Acquire admitted.
func (in *Instance) Release() {
	l := in.l
	l.mu.Lock()
	defer l.mu.Unlock()
	in.execs++
	l.freeLocked(in)
	l.grantLocked()
}

// scaled is Triton's scheduling weight: executions so far times priority.
// The waiter with the smallest weight is served first.
func (w *waiter) scaled() uint64 { return w.in.execs * w.in.priority }

// grantLocked admits waiters in order while the first in line can take its
// resources. Like Triton it never lets a later waiter overtake the first.
func (l *Limiter) grantLocked() {
	for len(l.waiting) > 0 {
		best := 0
		for i, w := range l.waiting[1:] {
			b := l.waiting[best]
			if w.scaled() < b.scaled() || (w.scaled() == b.scaled() && w.seq < b.seq) {
				best = i + 1
			}
		}
		w := l.waiting[best]
		if !l.fitsLocked(w.in) {
			return
		}
		for k, n := range w.in.needs {
			l.used[k] += n
		}
		l.waiting = append(l.waiting[:best], l.waiting[best+1:]...)
		w.granted = true
		close(w.ready)
	}
}

func (l *Limiter) fitsLocked(in *Instance) bool {
	for k, n := range in.needs {
		if l.used[k]+n > l.limits[k] {
			return false
		}
	}
	return true
}

func (l *Limiter) freeLocked(in *Instance) {
	for k, n := range in.needs {
		l.used[k] -= min(n, l.used[k])
	}
}

func (l *Limiter) removeLocked(w *waiter) {
	for i, x := range l.waiting {
		if x == w {
			l.waiting = append(l.waiting[:i], l.waiting[i+1:]...)
			return
		}
	}
}
