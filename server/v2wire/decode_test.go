package v2wire

import (
	"fmt"
	"strings"
	"testing"
)

func TestBinaryInputsAliasBody(t *testing.T) {
	hdr := `{"inputs":[{"name":"a","datatype":"INT32","shape":[2],"parameters":{"binary_data_size":8}},{"name":"b","datatype":"UINT8","shape":[3],"parameters":{"binary_data_size":3}}]}`
	body, _ := binaryBody(hdr, make([]byte, 8), []byte{1, 2, 3})
	c := &Call{}
	if err := DecodeJSON(c, body[:len(hdr)], body[len(hdr):]); err != nil {
		t.Fatal(err)
	}
	if &c.Req.Inputs[0].Data[0] != &body[len(hdr)] || &c.Req.Inputs[1].Data[0] != &body[len(hdr)+8] {
		t.Error("binary input data was copied")
	}
	if cap(c.Req.Inputs[0].Data) != 8 {
		t.Errorf("input data capacity %d reaches into the next tensor", cap(c.Req.Inputs[0].Data))
	}
}

// Duplicate tensor names are found however many tensors a request lists
// (past 16 they are looked up in a set), and a pooled call
// forgets the names of its previous request.
func TestDecodeDuplicateNamesManyTensors(t *testing.T) {
	build := func(n int, dupInput, dupOutput bool) []byte {
		var b strings.Builder
		b.WriteString(`{"inputs":[`)
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"name":"in%d","datatype":"INT8","shape":[1],"data":[1]}`, i)
		}
		if dupInput {
			b.WriteString(`,{"name":"in1","datatype":"INT8","shape":[1],"data":[1]}`)
		}
		b.WriteString(`],"outputs":[`)
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"name":"out%d"}`, i)
		}
		if dupOutput {
			b.WriteString(`,{"name":"out1"}`)
		}
		b.WriteString(`]}`)
		return []byte(b.String())
	}
	for _, n := range []int{3, linearNameScan, 3 * linearNameScan} {
		c := &Call{}
		err := DecodeJSON(c, build(n, true, false), nil)
		if err == nil || err.Error() != "input 'in1' already exists in request" {
			t.Fatalf("%d inputs and a duplicate: %v", n, err)
		}
		c.Reset()
		if err := DecodeJSON(c, build(n, false, true), nil); err != nil {
			t.Fatalf("%d tensors on a reused call: %v", n, err)
		}
		if len(c.Req.Inputs) != n || len(c.Req.Outputs) != n {
			t.Fatalf("%d tensors: decoded %d inputs, %d outputs", n, len(c.Req.Inputs), len(c.Req.Outputs))
		}
		c.Reset()
	}
}
