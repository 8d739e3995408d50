//go:build cgo

package tensorflow

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nereid-project/nereid/inference"
)

// TestHeaders compiles the binding's own declarations against TensorFlow's
// headers, which `make tf` installs next to the library: the enums and
// structs the binding declares by hand must agree with them.
func TestHeaders(t *testing.T) {
	lib := testLibrary(t)
	include := filepath.Join(filepath.Dir(filepath.Dir(lib)), "include")
	if _, err := os.Stat(filepath.Join(include, "tensorflow", "c", "c_api.h")); err != nil {
		t.Skipf("no TensorFlow headers at %s (make tf installs them)", include)
	}
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler")
	}
	var src strings.Builder
	src.WriteString("#include <stddef.h>\n#include \"tensorflow/c/c_api.h\"\n#include \"tensorflow/c/tf_tstring.h\"\n")
	check := func(cond string) { fmt.Fprintf(&src, "_Static_assert(%s, %q);\n", cond, cond) }
	for dt, tf := range tfTypes {
		name := map[int]string{
			tfFloat: "TF_FLOAT", tfDouble: "TF_DOUBLE", tfInt32: "TF_INT32", tfUint8: "TF_UINT8", tfInt16: "TF_INT16",
			tfInt8: "TF_INT8", tfString: "TF_STRING", tfInt64: "TF_INT64", tfBool: "TF_BOOL", tfBfloat16: "TF_BFLOAT16",
			tfUint16: "TF_UINT16", tfHalf: "TF_HALF", tfUint32: "TF_UINT32", tfUint64: "TF_UINT64",
		}[tf]
		if name == "" {
			t.Fatalf("no header name for %s", dt)
		}
		check(fmt.Sprintf("%s == %d", name, tf))
	}
	for name, code := range map[string]int{
		"TF_CANCELLED": tfCancelled, "TF_INVALID_ARGUMENT": tfInvalidArgument, "TF_NOT_FOUND": tfNotFound,
		"TF_ALREADY_EXISTS": tfAlreadyExists, "TF_RESOURCE_EXHAUSTED": tfResourceExhausted,
		"TF_FAILED_PRECONDITION": tfFailedPrecondition, "TF_OUT_OF_RANGE": tfOutOfRange,
		"TF_UNIMPLEMENTED": tfUnimplemented, "TF_UNAVAILABLE": tfUnavailable, "TF_OK": 0,
	} {
		check(fmt.Sprintf("%s == %d", name, code))
	}
	check("sizeof(TF_TString) == 24 && _Alignof(TF_TString) == 8")
	check("sizeof(TF_Output) == 16 && offsetof(TF_Output, index) == 8")
	check("offsetof(TF_Buffer, data) == 0 && offsetof(TF_Buffer, length) == 8 && offsetof(TF_Buffer, data_deallocator) == 16")
	file := filepath.Join(t.TempDir(), "check.c")
	if err := os.WriteFile(file, []byte(src.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(cc, "-std=c11", "-fsyntax-only", "-I", include, file).CombinedOutput()
	if err != nil {
		t.Fatalf("the binding's declarations disagree with TensorFlow's headers: %v\n%s", err, out)
	}
}

// allTypes lists every protocol type with one element's bytes.
var allTypes = []struct {
	dt   inference.DataType
	elem []byte
}{
	{inference.Bool, []byte{1}},
	{inference.Uint8, []byte{200}},
	{inference.Uint16, []byte{1, 2}},
	{inference.Uint32, []byte{1, 2, 3, 4}},
	{inference.Uint64, []byte{1, 2, 3, 4, 5, 6, 7, 8}},
	{inference.Int8, []byte{0xff}},
	{inference.Int16, []byte{0xfe, 0xff}},
	{inference.Int32, []byte{0xfd, 0xff, 0xff, 0xff}},
	{inference.Int64, []byte{1, 0, 0, 0, 0, 0, 0, 0x80}},
	{inference.FP16, []byte{0x00, 0x3c}},
	{inference.FP32, []byte{0, 0, 0x80, 0x3f}},
	{inference.FP64, []byte{0, 0, 0, 0, 0, 0, 0xf0, 0x3f}},
	{inference.BF16, []byte{0x80, 0x3f}},
}

func TestTensorRoundTrip(t *testing.T) {
	testBackend(t)
	for _, c := range allTypes {
		t.Run(c.dt.String(), func(t *testing.T) {
			shape := []int64{2, 3}
			row := bytes.Repeat(c.elem, 3)
			v, err := newTensor(tfTypes[c.dt], shape, [][]byte{row, row})
			if err != nil {
				t.Fatal(err)
			}
			defer deleteTensors([]tensor{v})
			typ, got, err := tensorInfo(v)
			if err != nil || typ != tfTypes[c.dt] || fmt.Sprint(got) != fmt.Sprint(shape) {
				t.Fatalf("type %d shape %v err %v, want %d %v", typ, got, err, tfTypes[c.dt], shape)
			}
			data, err := tensorBytes(v, 6*len(c.elem))
			if err != nil || !bytes.Equal(data, append(row, row...)) {
				t.Fatalf("data %v err %v", data, err)
			}
			if _, err := tensorBytes(v, 5); err == nil {
				t.Error("a wrong size was not refused")
			}
		})
	}
}

func TestStringTensors(t *testing.T) {
	testBackend(t)
	long := strings.Repeat("x", 1000) // past the inline capacity
	elems := bytesElems("", "a\x00b", long, "é")
	v, err := newStringTensor([]int64{2, 2}, [][]byte{elems[:4+0+4+3], elems[4+0+4+3:]}, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer deleteTensors([]tensor{v})
	if typ, shape, _ := tensorInfo(v); typ != tfString || fmt.Sprint(shape) != "[2 2]" {
		t.Fatalf("type %d shape %v", typ, shape)
	}
	if got := stringTensorBytes(v, 4); !bytes.Equal(got, elems) {
		t.Fatalf("read back %q, want %q", got, elems)
	}

	for _, c := range []struct {
		name  string
		data  []byte
		count int64
		want  string
	}{
		{"short prefix", []byte{1, 0}, 1, "ends inside a length prefix"},
		{"past the end", []byte{9, 0, 0, 0, 'a'}, 1, "runs past the end"},
		{"too many", bytesElems("a", "b"), 1, "more elements than the shape"},
		{"too few", bytesElems("a"), 2, "fewer elements than the shape"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := newStringTensor([]int64{c.count}, [][]byte{c.data}, c.count)
			if err == nil || !strings.Contains(err.Error(), c.want) || inference.CodeOf(err) != inference.CodeInvalidArg {
				t.Fatalf("err %v (code %v), want invalid argument with %q", err, inference.CodeOf(err), c.want)
			}
		})
	}
}

func TestStatusErrors(t *testing.T) {
	testBackend(t)
	g := newGraph()
	defer g.close()
	err := g.importGraphDef([]byte("not a graph"))
	if err == nil || inference.CodeOf(err) != inference.CodeInvalidArg || !strings.Contains(err.Error(), "importing the GraphDef: ") {
		t.Fatalf("corrupt GraphDef: %v (code %v)", err, inference.CodeOf(err))
	}
	opts, err := newSessionOptions(sessionConfig{intraOp: 1, interOp: 1}.marshal())
	if err != nil {
		t.Fatal(err)
	}
	defer opts.close()
	_, _, err = loadSavedModel(opts, filepath.Join(t.TempDir(), "missing"), []string{"serve"}, newGraph())
	if err == nil || !strings.Contains(err.Error(), "loading the SavedModel") {
		t.Fatalf("missing SavedModel: %v", err)
	}
	if _, err := newSessionOptions([]byte{0xff, 0xff}); err == nil {
		t.Error("a corrupt ConfigProto was accepted")
	}
}

// TestRunEveryType feeds every type, BYTES included, through a GraphDef
// of Identity ops in one run.
func TestRunEveryType(t *testing.T) {
	testBackend(t)
	data, err := os.ReadFile(filepath.Join("testdata", "models", "all_types.graphdef"))
	if err != nil {
		t.Fatal(err)
	}
	g := newGraph()
	defer g.close()
	if err := g.importGraphDef(data); err != nil {
		t.Fatal(err)
	}
	opts, _ := newSessionOptions(nil)
	defer opts.close()
	s, err := newSession(g, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.close() }()
	// The graph's inputs follow make_models.py's order of types.
	order := []inference.DataType{inference.Bool, inference.Uint8, inference.Uint16, inference.Uint32, inference.Uint64,
		inference.Int8, inference.Int16, inference.Int32, inference.Int64, inference.FP16, inference.FP32, inference.FP64,
		inference.Bytes, inference.BF16}
	var feeds, fetches []output
	var values []tensor
	var want [][]byte
	defer func() { deleteTensors(values) }()
	for k, dt := range order {
		in, ok1 := g.tensor(fmt.Sprintf("INPUT%d", k), 0)
		out, ok2 := g.tensor(fmt.Sprintf("OUTPUT%d", k), 0)
		if !ok1 || !ok2 || outputType(in) != tfTypes[dt] {
			t.Fatalf("%s: tensors %v %v type %d", dt, ok1, ok2, outputType(in))
		}
		var v tensor
		var b []byte
		if dt == inference.Bytes {
			b = bytesElems("one", "", "three\x00")
			v, err = newStringTensor([]int64{1, 3}, [][]byte{b}, 3)
		} else {
			for _, c := range allTypes {
				if c.dt == dt {
					b = bytes.Repeat(c.elem, 3)
				}
			}
			v, err = newTensor(tfTypes[dt], []int64{1, 3}, [][]byte{b})
		}
		if err != nil {
			t.Fatal(err)
		}
		feeds, fetches, values, want = append(feeds, in), append(fetches, out), append(values, v), append(want, b)
	}
	outs := make([]tensor, len(fetches))
	if err := s.run(feeds, values, fetches, outs); err != nil {
		t.Fatal(err)
	}
	defer deleteTensors(outs)
	for k, dt := range order {
		var got []byte
		if dt == inference.Bytes {
			got = stringTensorBytes(outs[k], 3)
		} else if got, err = tensorBytes(outs[k], len(want[k])); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want[k]) {
			t.Errorf("%s: got %v, want %v", dt, got, want[k])
		}
	}
	// A feed of the wrong type fails the run with TensorFlow's words.
	wrong, _ := newTensor(tfFloat, []int64{1, 3}, [][]byte{make([]byte, 12)})
	defer deleteTensors([]tensor{wrong})
	err = s.run(feeds[:1], []tensor{wrong}, fetches[:1], make([]tensor, 1))
	if err == nil || inference.CodeOf(err) != inference.CodeInvalidArg {
		t.Fatalf("wrong feed type: %v (code %v)", err, inference.CodeOf(err))
	}
}

// FuzzStringTensor: any BYTES data makes a string tensor that reads back
// the same, or an invalid-argument error; never a crash in C.
func FuzzStringTensor(f *testing.F) {
	testBackend(f)
	f.Add(bytesElems("a", "", "bc"), int64(3))
	f.Add([]byte{255, 255, 255, 255}, int64(1))
	f.Fuzz(func(t *testing.T, data []byte, count int64) {
		if count < 0 || count > 1<<16 {
			return
		}
		v, err := newStringTensor([]int64{count}, [][]byte{data}, count)
		if err != nil {
			if inference.CodeOf(err) != inference.CodeInvalidArg {
				t.Fatalf("code %v: %v", inference.CodeOf(err), err)
			}
			return
		}
		defer deleteTensors([]tensor{v})
		if got := stringTensorBytes(v, int(count)); !bytes.Equal(got, data) && len(data) > 0 {
			t.Fatalf("read back %q, want %q", got, data)
		}
	})
}
