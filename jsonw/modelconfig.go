package jsonw

import (
	"encoding/base64"
	"math"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/nereid-project/nereid/proto/inferencepb"
)

// AppendModelConfig writes a model configuration the way Triton's
// config endpoint does (core ModelConfigToJson): proto field names, enums by
// name, every scalar field including defaults, repeated and map fields even
// when empty, message fields and oneof members only when set, and every
// integer, 64-bit ones included, as a JSON number (protobuf's JSON mapping
// would quote 64-bit integers; Triton does not). Map keys are JSON strings,
// as JSON requires.
func AppendModelConfig(dst []byte, cfg *inferencepb.ModelConfig) []byte {
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
		dst = AppendString(dst, string(fd.Name()))
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
		dst = AppendString(dst, k.String())
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
		return AppendProtoFloat(dst, v.Float(), 32)
	case protoreflect.DoubleKind:
		return AppendProtoFloat(dst, v.Float(), 64)
	case protoreflect.StringKind:
		return AppendString(dst, v.String())
	case protoreflect.BytesKind:
		dst = append(dst, '"')
		dst = base64.StdEncoding.AppendEncode(dst, v.Bytes())
		return append(dst, '"')
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return AppendString(dst, string(ev.Name()))
		}
		return strconv.AppendInt(dst, int64(v.Enum()), 10)
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return appendProtoMessage(dst, v.Message())
	}
	return append(dst, "null"...)
}

// AppendProtoFloat prints floats as protobuf's C++ JSON printer does
// (SimpleDtoa / SimpleFtoa): the shortest digits that round-trip, laid out
// like printf's %g at precision 15 (6 for float), or 17 (9) when more
// digits are needed; non-finite values are strings.
func AppendProtoFloat(dst []byte, f float64, bits int) []byte {
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
