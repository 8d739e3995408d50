package httpfront

import (
	"encoding/base64"
	"math"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/repository"
)

// appendServerMetadata writes {"name","version","extensions":[...]}.
func appendServerMetadata(dst []byte, md *inferencepb.ServerMetadataResponse) []byte {
	dst = append(dst, `{"name":`...)
	dst = appendJSONString(dst, md.GetName())
	dst = append(dst, `,"version":`...)
	dst = appendJSONString(dst, md.GetVersion())
	dst = append(dst, `,"extensions":`...)
	dst = appendStringArray(dst, md.GetExtensions())
	return append(dst, '}')
}

// appendModelMetadata writes {"name","versions","platform","inputs",
// "outputs"} with tensors as {"name","datatype","shape"}.
func appendModelMetadata(dst []byte, md *inferencepb.ModelMetadataResponse) []byte {
	dst = append(dst, `{"name":`...)
	dst = appendJSONString(dst, md.GetName())
	dst = append(dst, `,"versions":`...)
	dst = appendStringArray(dst, md.GetVersions())
	dst = append(dst, `,"platform":`...)
	dst = appendJSONString(dst, md.GetPlatform())
	dst = append(dst, `,"inputs":`...)
	dst = appendTensorMetadata(dst, md.GetInputs())
	dst = append(dst, `,"outputs":`...)
	dst = appendTensorMetadata(dst, md.GetOutputs())
	return append(dst, '}')
}

func appendTensorMetadata(dst []byte, ts []*inferencepb.ModelMetadataResponse_TensorMetadata) []byte {
	dst = append(dst, '[')
	for i, t := range ts {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"name":`...)
		dst = appendJSONString(dst, t.GetName())
		dst = append(dst, `,"datatype":`...)
		dst = appendJSONString(dst, t.GetDatatype())
		dst = append(dst, `,"shape":`...)
		dst = appendInt64Array(dst, t.GetShape())
		dst = append(dst, '}')
	}
	return append(dst, ']')
}

func appendStringArray(dst []byte, ss []string) []byte {
	dst = append(dst, '[')
	for i, s := range ss {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, s)
	}
	return append(dst, ']')
}

func appendInt64Array(dst []byte, vs []int64) []byte {
	dst = append(dst, '[')
	for i, v := range vs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = strconv.AppendInt(dst, v, 10)
	}
	return append(dst, ']')
}

// appendRepositoryIndex writes the bare array Triton answers
// /v2/repository/index with; empty fields are left out.
func appendRepositoryIndex(dst []byte, entries []repository.IndexEntry) []byte {
	dst = append(dst, '[')
	for i, e := range entries {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"name":`...)
		dst = appendJSONString(dst, e.Name)
		if e.Version != "" {
			dst = append(dst, `,"version":`...)
			dst = appendJSONString(dst, e.Version)
		}
		if e.State != "" {
			dst = append(dst, `,"state":`...)
			dst = appendJSONString(dst, string(e.State))
		}
		if e.Reason != "" {
			dst = append(dst, `,"reason":`...)
			dst = appendJSONString(dst, e.Reason)
		}
		dst = append(dst, '}')
	}
	return append(dst, ']')
}

// appendModelStatistics writes {"model_stats":[...]} with Triton's keys and
// order; every counter is a JSON number and absent sub-messages print as
// zeros.
func appendModelStatistics(dst []byte, st *inferencepb.ModelStatisticsResponse) []byte {
	dst = append(dst, `{"model_stats":[`...)
	for i, m := range st.GetModelStats() {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"name":`...)
		dst = appendJSONString(dst, m.GetName())
		dst = append(dst, `,"version":`...)
		dst = appendJSONString(dst, m.GetVersion())
		dst = append(dst, `,"last_inference":`...)
		dst = strconv.AppendUint(dst, m.GetLastInference(), 10)
		dst = append(dst, `,"inference_count":`...)
		dst = strconv.AppendUint(dst, m.GetInferenceCount(), 10)
		dst = append(dst, `,"execution_count":`...)
		dst = strconv.AppendUint(dst, m.GetExecutionCount(), 10)

		is := m.GetInferenceStats()
		dst = append(dst, `,"inference_stats":{`...)
		dst = appendDuration(dst, "success", is.GetSuccess(), false)
		dst = appendDuration(dst, "fail", is.GetFail(), true)
		dst = appendDuration(dst, "queue", is.GetQueue(), true)
		dst = appendDuration(dst, "compute_input", is.GetComputeInput(), true)
		dst = appendDuration(dst, "compute_infer", is.GetComputeInfer(), true)
		dst = appendDuration(dst, "compute_output", is.GetComputeOutput(), true)
		dst = appendDuration(dst, "cache_hit", is.GetCacheHit(), true)
		dst = appendDuration(dst, "cache_miss", is.GetCacheMiss(), true)
		dst = append(dst, '}')

		dst = append(dst, `,"response_stats":{`...)
		rs := m.GetResponseStats()
		keys := make([]string, 0, len(rs))
		for k := range rs {
			keys = append(keys, k)
		}
		// Response indexes are decimal: order them as numbers.
		sort.Slice(keys, func(a, b int) bool {
			if len(keys[a]) != len(keys[b]) {
				return len(keys[a]) < len(keys[b])
			}
			return keys[a] < keys[b]
		})
		for j, k := range keys {
			if j > 0 {
				dst = append(dst, ',')
			}
			r := rs[k]
			dst = appendJSONString(dst, k)
			dst = append(dst, ":{"...)
			dst = appendDuration(dst, "compute_infer", r.GetComputeInfer(), false)
			dst = appendDuration(dst, "compute_output", r.GetComputeOutput(), true)
			dst = appendDuration(dst, "success", r.GetSuccess(), true)
			dst = appendDuration(dst, "fail", r.GetFail(), true)
			dst = appendDuration(dst, "empty_response", r.GetEmptyResponse(), true)
			dst = appendDuration(dst, "cancel", r.GetCancel(), true)
			dst = append(dst, '}')
		}
		dst = append(dst, '}')

		dst = append(dst, `,"batch_stats":[`...)
		for j, b := range m.GetBatchStats() {
			if j > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"batch_size":`...)
			dst = strconv.AppendUint(dst, b.GetBatchSize(), 10)
			dst = appendDuration(dst, "compute_input", b.GetComputeInput(), true)
			dst = appendDuration(dst, "compute_infer", b.GetComputeInfer(), true)
			dst = appendDuration(dst, "compute_output", b.GetComputeOutput(), true)
			dst = append(dst, '}')
		}
		dst = append(dst, ']')

		dst = append(dst, `,"memory_usage":[`...)
		for j, u := range m.GetMemoryUsage() {
			if j > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"type":`...)
			dst = appendJSONString(dst, u.GetType())
			dst = append(dst, `,"id":`...)
			dst = strconv.AppendInt(dst, u.GetId(), 10)
			dst = append(dst, `,"byte_size":`...)
			dst = strconv.AppendUint(dst, u.GetByteSize(), 10)
			dst = append(dst, '}')
		}
		dst = append(dst, "]}"...)
	}
	return append(dst, "]}"...)
}

func appendDuration(dst []byte, key string, d *inferencepb.StatisticDuration, comma bool) []byte {
	if comma {
		dst = append(dst, ',')
	}
	dst = appendJSONString(dst, key)
	dst = append(dst, `:{"count":`...)
	dst = strconv.AppendUint(dst, d.GetCount(), 10)
	dst = append(dst, `,"ns":`...)
	dst = strconv.AppendUint(dst, d.GetNs(), 10)
	return append(dst, '}')
}

// appendModelConfigJSON writes a model configuration the way Triton's
// config endpoint does (core ModelConfigToJson): proto field names, enums by
// name, every scalar field including defaults, repeated and map fields even
// when empty, message fields and oneof members only when set, and every
// integer, 64-bit ones included, as a JSON number (protobuf's JSON mapping
// would quote 64-bit integers; Triton does not). Map keys are JSON strings,
// as JSON requires.
func appendModelConfigJSON(dst []byte, cfg *inferencepb.ModelConfig) []byte {
	return appendProtoMessage(dst, cfg.ProtoReflect())
}

func appendProtoMessage(dst []byte, m protoreflect.Message) []byte {
	dst = append(dst, '{')
	fields := m.Descriptor().Fields()
	first := true
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if !printProtoField(m, fd) {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = appendJSONString(dst, string(fd.Name()))
		dst = append(dst, ':')
		v := m.Get(fd)
		switch {
		case fd.IsList():
			l := v.List()
			dst = append(dst, '[')
			for j := 0; j < l.Len(); j++ {
				if j > 0 {
					dst = append(dst, ',')
				}
				dst = appendProtoValue(dst, fd, l.Get(j))
			}
			dst = append(dst, ']')
		case fd.IsMap():
			dst = appendProtoMap(dst, fd, v.Map())
		default:
			dst = appendProtoValue(dst, fd, v)
		}
	}
	return append(dst, '}')
}

// printProtoField reports whether Triton's JSON form shows fd: fields
// without presence (scalars, lists, maps) always; messages, oneof members
// and explicit-presence scalars only when set.
func printProtoField(m protoreflect.Message, fd protoreflect.FieldDescriptor) bool {
	if fd.IsList() || fd.IsMap() {
		return true
	}
	if fd.HasPresence() {
		return m.Has(fd)
	}
	return true
}

func appendProtoMap(dst []byte, fd protoreflect.FieldDescriptor, mp protoreflect.Map) []byte {
	keys := make([]protoreflect.MapKey, 0, mp.Len())
	mp.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
		keys = append(keys, k)
		return true
	})
	kind := fd.MapKey().Kind()
	sort.Slice(keys, func(a, b int) bool {
		switch kind {
		case protoreflect.StringKind:
			return keys[a].String() < keys[b].String()
		case protoreflect.BoolKind:
			return !keys[a].Bool() && keys[b].Bool()
		case protoreflect.Uint32Kind, protoreflect.Uint64Kind, protoreflect.Fixed32Kind, protoreflect.Fixed64Kind:
			return keys[a].Uint() < keys[b].Uint()
		default:
			return keys[a].Int() < keys[b].Int()
		}
	})
	dst = append(dst, '{')
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, k.String())
		dst = append(dst, ':')
		dst = appendProtoValue(dst, fd.MapValue(), mp.Get(k))
	}
	return append(dst, '}')
}

func appendProtoValue(dst []byte, fd protoreflect.FieldDescriptor, v protoreflect.Value) []byte {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return strconv.AppendBool(dst, v.Bool())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return strconv.AppendInt(dst, v.Int(), 10)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind,
		protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return strconv.AppendUint(dst, v.Uint(), 10)
	case protoreflect.FloatKind:
		return appendProtoFloat(dst, v.Float(), 32)
	case protoreflect.DoubleKind:
		return appendProtoFloat(dst, v.Float(), 64)
	case protoreflect.StringKind:
		return appendJSONString(dst, v.String())
	case protoreflect.BytesKind:
		dst = append(dst, '"')
		dst = base64.StdEncoding.AppendEncode(dst, v.Bytes())
		return append(dst, '"')
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return appendJSONString(dst, string(ev.Name()))
		}
		return strconv.AppendInt(dst, int64(v.Enum()), 10)
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return appendProtoMessage(dst, v.Message())
	}
	return append(dst, "null"...)
}

// appendProtoFloat prints floats as protobuf's C++ JSON printer does
// (SimpleDtoa / SimpleFtoa): the shortest digits that round-trip, laid out
// like printf's %g at precision 15 (6 for float), or 17 (9) when more
// digits are needed; non-finite values are strings.
func appendProtoFloat(dst []byte, f float64, bits int) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, `"NaN"`...)
	case math.IsInf(f, 1):
		return append(dst, `"Infinity"`...)
	case math.IsInf(f, -1):
		return append(dst, `"-Infinity"`...)
	}
	var tmp [32]byte
	e := strconv.AppendFloat(tmp[:0], f, 'e', -1, bits)
	mant, expStr, _ := strings.Cut(string(e), "e")
	exp, _ := strconv.Atoi(expStr)
	digits := strings.Replace(strings.TrimPrefix(mant, "-"), ".", "", 1)
	prec := 15
	if bits == 32 {
		prec = 6
		if len(digits) > 6 {
			prec = 9
		}
	} else if len(digits) > 15 {
		prec = 17
	}
	if exp < -4 || exp >= prec {
		dst = append(dst, mant...)
		dst = append(dst, 'e')
		if exp < 0 {
			dst = append(dst, '-')
			exp = -exp
		} else {
			dst = append(dst, '+')
		}
		if exp < 10 {
			dst = append(dst, '0')
		}
		return strconv.AppendInt(dst, int64(exp), 10)
	}
	return strconv.AppendFloat(dst, f, 'f', -1, bits)
}
