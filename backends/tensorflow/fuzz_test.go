package tensorflow

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// metaGraphSeed is a MetaGraphDef with tag "serve" and a signature
// "serving_default" of one input and one output.
func metaGraphSeed() []byte {
	msg := func(num protowire.Number, body []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), body)
	}
	str := func(num protowire.Number, s string) []byte { return msg(num, []byte(s)) }
	varint := func(num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
	}
	shape := append(msg(2, varint(1, uint64(1<<64-1))), msg(2, varint(1, 16))...) // [-1, 16]
	info := append(append(str(1, "serving_default_X:0"), varint(2, tfFloat)...), msg(3, shape)...)
	sig := append(msg(1, append(str(1, "X"), msg(2, info)...)), msg(2, append(str(1, "Y"), msg(2, info)...))...)
	sig = append(sig, str(3, "tensorflow/serving/predict")...)
	out := msg(1, str(4, "serve"))
	return append(out, msg(5, append(str(1, "serving_default"), msg(2, sig)...))...)
}

func TestParseMetaGraph(t *testing.T) {
	m, err := parseMetaGraph(metaGraphSeed())
	if err != nil {
		t.Fatal(err)
	}
	sig := m.signatures["serving_default"]
	if len(m.tags) != 1 || sig == nil || len(sig.inputs) != 1 || sig.inputs[0].name != "serving_default_X:0" ||
		len(sig.inputs[0].dims) != 2 || sig.inputs[0].dims[0] != -1 || sig.inputs[0].dims[1] != 16 || sig.outputs[0].key != "Y" {
		t.Fatalf("%+v %+v", m, sig)
	}
	if _, err := parseMetaGraph(metaGraphSeed()[:7]); err == nil {
		t.Fatal("a truncated MetaGraphDef was read")
	}
	// A SavedModel: its MetaGraphs are field 2.
	saved := protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), metaGraphSeed())
	if m, err := parseSavedModel(saved, "serve"); err != nil || m.signatures["serving_default"] == nil {
		t.Fatalf("SavedModel: %v", err)
	}
	if _, err := parseSavedModel(saved, "train"); err == nil {
		t.Fatal("a missing tag was found")
	}
}

// FuzzParseMetaGraph: any bytes give a metaGraph or an error, never a
// panic (a model file is input the server does not control).
func FuzzParseMetaGraph(f *testing.F) {
	f.Add(metaGraphSeed())
	f.Add(protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), metaGraphSeed()))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseMetaGraph(data)
		if err == nil && m == nil {
			t.Fatal("no metaGraph and no error")
		}
		if m, err := parseSavedModel(data, "serve"); err == nil && m == nil {
			t.Fatal("no SavedModel MetaGraph and no error")
		}
		for _, name := range []string{"a:b", "op:0", "x"} {
			_, _, _ = splitTensorName(name)
		}
	})
}

func TestSessionConfig(t *testing.T) {
	b := sessionConfig{intraOp: 2, interOp: -1, perSessionThreads: true}.marshal()
	got := map[protowire.Number]uint64{}
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		if typ == protowire.VarintType {
			got[num] = x
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got[2] != 2 || int32(got[5]) != -1 || got[9] != 1 {
		t.Fatalf("ConfigProto fields %v", got)
	}
	if _, ok := got[7]; ok {
		t.Fatal("allow_soft_placement set")
	}
}
