package cache

import (
	"fmt"
	"sync"
	"testing"

	"github.com/nereid-project/nereid/inference"
)

func request(data []byte, params inference.Parameters) *inference.Request {
	return &inference.Request{
		ID:         "ignored",
		Inputs:     []inference.Tensor{{Name: "INPUT0", DataType: inference.Uint8, Shape: []int64{int64(len(data))}, Data: data}},
		Parameters: params,
	}
}

func TestKeyOf(t *testing.T) {
	base := KeyOf("m", 1, request([]byte{1, 2, 3}, nil))
	same := []*inference.Request{
		request([]byte{1, 2, 3}, nil),
		request([]byte{1, 2, 3}, inference.Parameters{"priority": uint64(1), "timeout": int64(5)}),
		{ID: "other id", Inputs: []inference.Tensor{{Name: "INPUT0", DataType: inference.Uint8, Shape: []int64{3}, Data: []byte{1, 2, 3}}},
			Outputs: []inference.RequestedOutput{{Name: "OUTPUT0"}}},
	}
	for i, r := range same {
		if KeyOf("m", 1, r) != base {
			t.Errorf("request %d: key differs, want the same", i)
		}
	}
	differ := map[string]Key{
		"model":     KeyOf("n", 1, request([]byte{1, 2, 3}, nil)),
		"version":   KeyOf("m", 2, request([]byte{1, 2, 3}, nil)),
		"data":      KeyOf("m", 1, request([]byte{1, 2, 4}, nil)),
		"parameter": KeyOf("m", 1, request([]byte{1, 2, 3}, inference.Parameters{"p": "x"})),
		"shape": KeyOf("m", 1, &inference.Request{Inputs: []inference.Tensor{
			{Name: "INPUT0", DataType: inference.Uint8, Shape: []int64{1, 3}, Data: []byte{1, 2, 3}}}}),
		"type": KeyOf("m", 1, &inference.Request{Inputs: []inference.Tensor{
			{Name: "INPUT0", DataType: inference.Int8, Shape: []int64{3}, Data: []byte{1, 2, 3}}}}),
	}
	for what, k := range differ {
		if k == base {
			t.Errorf("changing the %s kept the key", what)
		}
	}
	// Parameter types matter, and input order does not.
	if KeyOf("m", 1, request(nil, inference.Parameters{"p": int64(1)})) == KeyOf("m", 1, request(nil, inference.Parameters{"p": "1"})) {
		t.Error("int 1 and string \"1\" hash the same")
	}
	a := &inference.Request{Inputs: []inference.Tensor{{Name: "A", Data: []byte{1}}, {Name: "B", Data: []byte{2}}}}
	b := &inference.Request{Inputs: []inference.Tensor{{Name: "B", Data: []byte{2}}, {Name: "A", Data: []byte{1}}}}
	if KeyOf("m", 1, a) != KeyOf("m", 1, b) {
		t.Error("input order changed the key")
	}
	// Moving bytes between inputs changes the key (lengths are hashed).
	c := &inference.Request{Inputs: []inference.Tensor{{Name: "A", Data: []byte{1, 2}}, {Name: "B"}}}
	d := &inference.Request{Inputs: []inference.Tensor{{Name: "A", Data: []byte{1}}, {Name: "B", Data: []byte{2}}}}
	if KeyOf("m", 1, c) == KeyOf("m", 1, d) {
		t.Error("tensor boundaries are not part of the key")
	}
}

func response(name string, n int) *inference.Response {
	return &inference.Response{Outputs: []inference.Tensor{{Name: name, DataType: inference.Uint8, Shape: []int64{int64(n)}, Data: make([]byte, n)}}}
}

func key(i int) Key { return KeyOf(fmt.Sprint(i), 1, &inference.Request{}) }

func TestLRUEvictsLeastRecentlyUsed(t *testing.T) {
	one := Size(response("OUTPUT0", 100))
	c := NewLocal(3 * one)
	for i := range 3 {
		if !c.Put(key(i), response("OUTPUT0", 100)) {
			t.Fatalf("Put %d refused", i)
		}
	}
	if _, ok := c.Get(key(0)); !ok { // 0 becomes the most recently used
		t.Fatal("entry 0 missing")
	}
	c.Put(key(3), response("OUTPUT0", 100)) // evicts 1, the least recently used
	if _, ok := c.Get(key(1)); ok {
		t.Error("entry 1 survived; it was the least recently used")
	}
	for _, i := range []int{0, 2, 3} {
		if _, ok := c.Get(key(i)); !ok {
			t.Errorf("entry %d was evicted", i)
		}
	}
	if c.Len() != 3 || c.Used() != 3*one {
		t.Errorf("Len %d Used %d, want 3 and %d", c.Len(), c.Used(), 3*one)
	}
	// A larger entry evicts as many as it needs.
	if !c.Put(key(4), response("OUTPUT0", 200)) {
		t.Fatal("Put of a two-slot entry refused")
	}
	if c.Used() > c.Capacity() {
		t.Errorf("Used %d exceeds capacity %d", c.Used(), c.Capacity())
	}
	// An entry larger than the cache is refused and evicts nothing.
	before := c.Len()
	if c.Put(key(5), response("OUTPUT0", int(4*one))) {
		t.Error("an entry larger than the cache was stored")
	}
	if c.Len() != before {
		t.Error("a refused entry evicted others")
	}
	// Replacing a key does not count it twice.
	c.Put(key(4), response("OUTPUT0", 200))
	if c.Used() > c.Capacity() {
		t.Errorf("Used %d exceeds capacity %d after replacing", c.Used(), c.Capacity())
	}
}

func TestStoredCopyIsIndependent(t *testing.T) {
	c := NewLocal(1 << 20)
	resp := response("OUTPUT0", 4)
	c.Put(key(0), resp)
	resp.Outputs[0].Data[0] = 9 // the request buffer is reused
	resp.Outputs[0].Shape[0] = 7
	got, _ := c.Get(key(0))
	if got.Outputs[0].Data[0] != 0 || got.Outputs[0].Shape[0] != 4 {
		t.Fatal("the cache kept a reference to the response's buffers")
	}
	got.Outputs = got.Outputs[:0] // the caller owns its Outputs slice
	again, _ := c.Get(key(0))
	if len(again.Outputs) != 1 {
		t.Fatal("a caller's change to Outputs reached the cache")
	}
}

func TestConcurrentUse(t *testing.T) {
	c := NewLocal(10 * Size(response("OUTPUT0", 10)))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				k := key((g*7 + i) % 25)
				if _, ok := c.Get(k); !ok {
					c.Put(k, response("OUTPUT0", 10))
				}
			}
		})
	}
	wg.Wait()
	if c.Used() > c.Capacity() {
		t.Fatalf("Used %d exceeds capacity %d", c.Used(), c.Capacity())
	}
}

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig([]string{"local,size=1048576"}, 0)
	if err != nil || c.Size != 1048576 {
		t.Fatalf("ParseConfig = %+v, %v", c, err)
	}
	c, err = ParseConfig(nil, 4096)
	if err != nil || c.Size != 4096 {
		t.Fatalf("legacy size: %+v, %v", c, err)
	}
	for _, bad := range [][]string{{"redis,host=x"}, {"local,size=x"}, {"local,size"}, {"local,colour=red"}} {
		if _, err := ParseConfig(bad, 0); err == nil {
			t.Errorf("ParseConfig(%q) succeeded", bad)
		}
	}
}

func BenchmarkKeyOf(b *testing.B) {
	req := request(make([]byte, 64<<10), inference.Parameters{"p": int64(1)})
	b.ReportAllocs()
	b.SetBytes(64 << 10)
	for b.Loop() {
		KeyOf("m", 1, req)
	}
}
