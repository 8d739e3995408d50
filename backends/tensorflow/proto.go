package tensorflow

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

// The few TensorFlow protocol buffers the backend reads or writes, by their
// public field numbers (tensorflow/core/protobuf/meta_graph.proto,
// config.proto, framework/tensor_shape.proto). Nereid does not vendor
// TensorFlow's .proto files for them: a MetaGraphDef is read only for its
// tags and signatures, and a ConfigProto written only with its thread
// settings.

// signatureTensor is one input or output of a SignatureDef.
type signatureTensor struct {
	key    string // the signature key: the name config.pbtxt uses
	name   string // the graph tensor, "op:index"
	tfType int
	dims   []int64 // -1 for an unknown dimension; nil when the rank is unknown
}

// signature is a SignatureDef.
type signature struct {
	inputs, outputs []signatureTensor // sorted by key
	method          string
}

// metaGraph is what the backend reads of a MetaGraphDef.
type metaGraph struct {
	tags       []string
	signatures map[string]*signature
}

// signatureNames lists the signatures, sorted.
func (m *metaGraph) signatureNames() []string {
	names := make([]string, 0, len(m.signatures))
	for n := range m.signatures {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

var errTruncated = errors.New("truncated or malformed protocol buffer")

// fields calls f for each field of a serialized message; f gets the value
// of a bytes field, or the varint of a varint field.
func fields(b []byte, f func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errTruncated
		}
		b = b[n:]
		var (
			v []byte
			x uint64
		)
		switch typ {
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return errTruncated
		}
		b = b[n:]
		if err := f(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}

// parseMetaGraph reads the tags and signatures of a serialized MetaGraphDef.
func parseMetaGraph(b []byte) (*metaGraph, error) {
	m := &metaGraph{signatures: map[string]*signature{}}
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case 1: // meta_info_def
			return fields(v, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
				if num == 4 && typ == protowire.BytesType { // tags
					m.tags = append(m.tags, string(v))
				}
				return nil
			})
		case 5: // signature_def: map<string, SignatureDef>
			key, val, err := mapEntry(v)
			if err != nil {
				return err
			}
			sig, err := parseSignature(val)
			if err != nil {
				return fmt.Errorf("signature '%s': %w", key, err)
			}
			m.signatures[key] = sig
		default: // not read
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the MetaGraphDef: %w", err)
	}
	return m, nil
}

// parseSavedModel reads the MetaGraphDef tagged tag of a serialized
// SavedModel (saved_model.pb): auto-complete needs only its signatures, and
// reads them without loading TensorFlow.
func parseSavedModel(b []byte, tag string) (*metaGraph, error) {
	var found *metaGraph
	var tags [][]string
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if num != 2 || typ != protowire.BytesType || found != nil { // meta_graphs
			return nil
		}
		m, err := parseMetaGraph(v)
		if err != nil {
			return err
		}
		if slices.Contains(m.tags, tag) {
			found = m
		}
		tags = append(tags, m.tags)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the SavedModel: %w", err)
	}
	if found == nil {
		return nil, fmt.Errorf("no MetaGraph has the tag '%s' (the tag sets are %v)", tag, tags)
	}
	return found, nil
}

// mapEntry splits a map entry into its string key and message value.
func mapEntry(b []byte) (key string, val []byte, err error) {
	err = fields(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		switch {
		case num == 1 && typ == protowire.BytesType:
			key = string(v)
		case num == 2 && typ == protowire.BytesType:
			val = v
		}
		return nil
	})
	return key, val, err
}

func parseSignature(b []byte) (*signature, error) {
	s := &signature{}
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case 1, 2: // inputs, outputs: map<string, TensorInfo>
			key, val, err := mapEntry(v)
			if err != nil {
				return err
			}
			t, err := parseTensorInfo(key, val)
			if err != nil {
				return err
			}
			if num == 1 {
				s.inputs = append(s.inputs, t)
			} else {
				s.outputs = append(s.outputs, t)
			}
		case 3:
			s.method = string(v)
		default: // not read
		}
		return nil
	})
	byKey := func(ts []signatureTensor) func(i, j int) bool {
		return func(i, j int) bool { return ts[i].key < ts[j].key }
	}
	sort.Slice(s.inputs, byKey(s.inputs))
	sort.Slice(s.outputs, byKey(s.outputs))
	return s, err
}

// parseTensorInfo reads a TensorInfo: a dense tensor's name, dtype and
// shape. Sparse and composite tensors are refused.
func parseTensorInfo(key string, b []byte) (signatureTensor, error) {
	t := signatureTensor{key: key}
	unknownRank := false
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == 1 && typ == protowire.BytesType:
			t.name = string(v)
		case num == 2 && typ == protowire.VarintType:
			t.tfType = int(x)
		case num == 3 && typ == protowire.BytesType: // TensorShapeProto
			t.dims = []int64{}
			return fields(v, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
				switch {
				case num == 2 && typ == protowire.BytesType: // dim
					size := int64(-1)
					err := fields(v, func(num protowire.Number, typ protowire.Type, _ []byte, x uint64) error {
						if num == 1 && typ == protowire.VarintType {
							size = int64(x)
						}
						return nil
					})
					if size < 0 {
						size = -1
					}
					t.dims = append(t.dims, size)
					return err
				case num == 3 && typ == protowire.VarintType:
					unknownRank = x != 0
				}
				return nil
			})
		case num == 4 || num == 5:
			return fmt.Errorf("tensor '%s' is sparse or composite; only dense tensors are supported", key)
		}
		return nil
	})
	if unknownRank {
		t.dims = nil
	}
	return t, err
}

// splitTensorName splits a graph tensor name "op:index" (":0" when absent,
// as TensorFlow's Session::Run reads names).
func splitTensorName(name string) (op string, index int, err error) {
	i := strings.LastIndexByte(name, ':')
	if i < 0 {
		return name, 0, nil
	}
	n, err := strconv.Atoi(name[i+1:])
	if err != nil || n < 0 {
		return "", 0, fmt.Errorf("'%s' is not a tensor name (operation:index)", name)
	}
	return name[:i], n, nil
}

// sessionConfig is the part of a ConfigProto the backend sets.
type sessionConfig struct {
	intraOp, interOp   int
	perSessionThreads  bool
	allowSoftPlacement bool
}

// marshal serializes the settings as a ConfigProto.
func (c sessionConfig) marshal() []byte {
	var b []byte
	// device_count {"GPU": 0}: the CPU build has none, and a GPU build
	// must not take every GPU's memory for a CPU instance.
	entry := protowire.AppendTag(nil, 1, protowire.BytesType)
	entry = protowire.AppendString(entry, "GPU")
	entry = protowire.AppendTag(entry, 2, protowire.VarintType)
	entry = protowire.AppendVarint(entry, 0)
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendBytes(b, entry)
	if c.intraOp > 0 {
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(c.intraOp))
	}
	if c.interOp != 0 {
		// A negative count (-1) runs every op on the caller's thread: an
		// int32 field, so the varint is sign-extended.
		b = protowire.AppendTag(b, 5, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(int64(c.interOp)))
	}
	if c.allowSoftPlacement {
		b = protowire.AppendTag(b, 7, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	if c.perSessionThreads {
		b = protowire.AppendTag(b, 9, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	return b
}
