// Package cache is the response cache (Triton's `local` cache): responses of
// models with `response_cache { enable: true }`, keyed by a hash of the
// model version and the request's inputs and parameters, kept in one
// least-recently-used store bounded in bytes (--cache-config local,size=N).
package cache

import (
	"container/list"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/nereid-project/nereid/inference"
)

// Key identifies a request's response. It is a SHA-256 digest: equal keys
// mean equal requests for every practical purpose.
type Key [sha256.Size]byte

// ignoredParams are request parameters that change how a request is
// scheduled but not its result.
var ignoredParams = map[string]bool{"priority": true, "timeout": true}

// KeyOf hashes what determines a response: the model name and version, the
// inputs (name, type, shape, bytes, in name order) and the request
// parameters other than scheduling ones (in key order). Requested outputs
// are not part of the key: the cache keeps every output the model produced
// and the server selects the requested ones on a hit.
func KeyOf(model string, version int64, req *inference.Request) Key {
	h := sha256.New()
	var buf [8]byte
	writeInt := func(v uint64) {
		binary.LittleEndian.PutUint64(buf[:], v)
		h.Write(buf[:])
	}
	writeBytes := func(b []byte) {
		writeInt(uint64(len(b)))
		h.Write(b)
	}
	writeString := func(s string) {
		writeInt(uint64(len(s)))
		h.Write([]byte(s))
	}
	writeString(model)
	writeInt(uint64(version))

	inputs := make([]*inference.Tensor, len(req.Inputs))
	for i := range req.Inputs {
		inputs[i] = &req.Inputs[i]
	}
	slices.SortFunc(inputs, func(a, b *inference.Tensor) int { return strings.Compare(a.Name, b.Name) })
	writeInt(uint64(len(inputs)))
	for _, t := range inputs {
		writeString(t.Name)
		writeInt(uint64(t.DataType))
		writeInt(uint64(len(t.Shape)))
		for _, d := range t.Shape {
			writeInt(uint64(d))
		}
		writeBytes(t.Data)
	}

	keys := make([]string, 0, len(req.Parameters))
	for k := range req.Parameters {
		if !ignoredParams[k] {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	writeInt(uint64(len(keys)))
	for _, k := range keys {
		writeString(k)
		writeParam(h, req.Parameters[k])
	}
	var k Key
	h.Sum(k[:0])
	return k
}

// writeParam hashes a parameter value with its type, so that 1, "1" and
// true differ.
func writeParam(h hash.Hash, v any) {
	var s string
	switch x := v.(type) {
	case bool:
		s = "b" + strconv.FormatBool(x)
	case int64:
		s = "i" + strconv.FormatInt(x, 10)
	case uint64:
		s = "u" + strconv.FormatUint(x, 10)
	case float64:
		s = "f" + strconv.FormatUint(math.Float64bits(x), 16)
	case string:
		s = "s" + x
	default:
		s = fmt.Sprintf("?%T:%v", x, x)
	}
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(s)))
	h.Write(n[:])
	h.Write([]byte(s))
}

// Per-entry and per-tensor bookkeeping counted against the size, so that a
// cache of many tiny responses is bounded too.
const (
	entryOverhead  = 128
	tensorOverhead = 96
)

// Local is an LRU cache bounded in bytes. It is safe for concurrent use.
type Local struct {
	capacity int64

	mu    sync.Mutex // guards the fields below
	used  int64
	order *list.List // of *entry, most recently used first
	items map[Key]*list.Element
}

type entry struct {
	key  Key
	resp *inference.Response
	size int64
}

// NewLocal returns a cache that holds at most capacity bytes.
func NewLocal(capacity int64) *Local {
	return &Local{capacity: capacity, order: list.New(), items: map[Key]*list.Element{}}
}

// Capacity is the size bound in bytes.
func (c *Local) Capacity() int64 { return c.capacity }

// Get returns the cached response for k and marks it most recently used.
// The returned response is the caller's: its Outputs slice and Parameters
// map are fresh, the tensor bytes are shared and must not be written.
func (c *Local) Get(k Key) (*inference.Response, bool) {
	c.mu.Lock()
	el, ok := c.items[k]
	if !ok {
		c.mu.Unlock()
		return nil, false
	}
	c.order.MoveToFront(el)
	e := el.Value.(*entry)
	c.mu.Unlock()
	return shallowCopy(e.resp), true
}

// Put stores a copy of resp under k, evicting the least recently used
// entries to make room. It reports false, storing nothing, when the entry
// alone is larger than the cache.
func (c *Local) Put(k Key, resp *inference.Response) bool {
	size := Size(resp)
	if size > c.capacity {
		return false
	}
	stored := deepCopy(resp)
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		c.removeLocked(el)
	}
	for c.used+size > c.capacity {
		c.removeLocked(c.order.Back())
	}
	c.items[k] = c.order.PushFront(&entry{key: k, resp: stored, size: size})
	c.used += size
	return true
}

// Len is the number of cached responses.
func (c *Local) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.items)
}

// Used is the number of bytes the cached responses take.
func (c *Local) Used() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used
}

func (c *Local) removeLocked(el *list.Element) {
	e := c.order.Remove(el).(*entry)
	delete(c.items, e.key)
	c.used -= e.size
}

// Size is what a response counts against the cache's capacity.
func Size(resp *inference.Response) int64 {
	n := int64(entryOverhead)
	for _, t := range resp.Outputs {
		n += tensorOverhead + int64(len(t.Name)) + 8*int64(len(t.Shape)) + int64(len(t.Data))
	}
	return n
}

// deepCopy copies everything a later request could observe: the tensors'
// bytes may alias request buffers that the front end reuses.
func deepCopy(resp *inference.Response) *inference.Response {
	out := &inference.Response{Outputs: make([]inference.Tensor, len(resp.Outputs)), Parameters: copyParams(resp.Parameters)}
	for i, t := range resp.Outputs {
		out.Outputs[i] = inference.Tensor{
			Name:       t.Name,
			DataType:   t.DataType,
			Shape:      slices.Clone(t.Shape),
			Data:       slices.Clone(t.Data),
			Parameters: copyParams(t.Parameters),
		}
	}
	return out
}

func shallowCopy(resp *inference.Response) *inference.Response {
	out := &inference.Response{Outputs: slices.Clone(resp.Outputs), Parameters: copyParams(resp.Parameters)}
	for i := range out.Outputs {
		out.Outputs[i].Parameters = copyParams(out.Outputs[i].Parameters)
	}
	return out
}

func copyParams(p inference.Parameters) inference.Parameters {
	if p == nil {
		return nil
	}
	out := make(inference.Parameters, len(p))
	for k, v := range p {
		out[k] = v
	}
	return out
}

// Config is the parsed --cache-config for the local cache.
type Config struct {
	Size int64 // bytes; 0 when no cache is configured
}

// ParseConfig reads the --cache-config values (each "<cache>,<key>=<value>")
// and the deprecated --response-cache-byte-size (0 when not given). Only the
// local cache exists in Nereid.
func ParseConfig(values []string, legacySize int64) (Config, error) {
	var c Config
	if legacySize < 0 {
		return c, fmt.Errorf("--response-cache-byte-size: %d must not be negative", legacySize)
	}
	c.Size = legacySize
	for _, v := range values {
		name, kv, _ := strings.Cut(v, ",")
		if name != "local" {
			return c, fmt.Errorf("--cache-config: cache %q is not supported: Nereid provides the 'local' cache", name)
		}
		key, value, ok := strings.Cut(kv, "=")
		if !ok || key == "" {
			return c, fmt.Errorf("--cache-config: %q is not <cache>,<key>=<value>", v)
		}
		switch key {
		case "size":
			n, err := strconv.ParseInt(value, 10, 64)
			if err != nil || n < 0 {
				return c, fmt.Errorf("--cache-config: local cache size %q is not a number of bytes", value)
			}
			c.Size = n
		default:
			return c, fmt.Errorf("--cache-config: unknown local cache setting %q (known: size)", key)
		}
	}
	return c, nil
}
