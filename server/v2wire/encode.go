package v2wire

import (
	"encoding/binary"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/jsonw"
)

// ResponseEncoding picks the response compression from Accept-Encoding as
// Triton does: the highest-weighted of identity, gzip and deflate, the
// first on a tie; anything else is ignored.
func ResponseEncoding(accept []byte) string {
	if len(accept) == 0 {
		return ""
	}
	best, weight := "identity", 0.0
	for part := range strings.SplitSeq(string(accept), ",") {
		typ, q, hasQ := strings.Cut(part, ";q=")
		typ = strings.TrimSpace(typ)
		if typ == "" {
			continue
		}
		w := 1.0
		if hasQ {
			var err error
			if w, err = strconv.ParseFloat(strings.TrimSpace(q), 64); err != nil {
				continue
			}
		}
		if (typ == "identity" || typ == "gzip" || typ == "deflate") && w > weight {
			best, weight = typ, w
		}
	}
	if best == "identity" {
		return ""
	}
	return best
}

// AppendResponse writes the JSON header of an inference response and then
// the data of its binary outputs, as c's request asked for them. It
// returns the header length and whether any binary data follows it.
func AppendResponse(dst []byte, c *Call, resp *inference.Response) ([]byte, int, bool, error) {
	start := len(dst)
	dst = append(dst, '{')
	id := resp.ID
	if id == "" {
		id = c.Req.ID
	}
	if id != "" {
		dst = append(dst, `"id":`...)
		dst = jsonw.AppendString(dst, id)
		dst = append(dst, ',')
	}
	name := resp.ModelName
	if name == "" {
		name = c.Req.ModelName
	}
	dst = append(dst, `"model_name":`...)
	dst = jsonw.AppendString(dst, name)
	dst = append(dst, `,"model_version":`...)
	dst = jsonw.AppendString(dst, resp.ModelVersion)
	if len(resp.Parameters) > 0 {
		dst = append(dst, `,"parameters":`...)
		dst = jsonw.AppendParameters(dst, resp.Parameters)
	}
	dst = append(dst, `,"outputs":[`...)
	c.binOuts = c.binOuts[:0]
	for i := range resp.Outputs {
		t := &resp.Outputs[i]
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"name":`...)
		dst = jsonw.AppendString(dst, t.Name)
		dst = append(dst, `,"datatype":`...)
		dst = jsonw.AppendString(dst, t.DataType.String())
		dst = append(dst, `,"shape":`...)
		dst = AppendInt64Array(dst, t.Shape)
		switch c.kindFor(t.Name) {
		case kindShm:
			// The data is in the client's shared-memory region: like
			// Triton, the output carries no data.
			if len(t.Parameters) > 0 {
				dst = append(dst, `,"parameters":`...)
				dst = jsonw.AppendParameters(dst, t.Parameters)
			}
		case kindBinary:
			dst = append(dst, `,"parameters":{"binary_data_size":`...)
			dst = strconv.AppendInt(dst, int64(len(t.Data)), 10)
			dst = appendMoreParameters(dst, t.Parameters)
			dst = append(dst, '}')
			if len(t.Data) > 0 {
				c.binOuts = append(c.binOuts, i)
			}
		default:
			if len(t.Parameters) > 0 {
				dst = append(dst, `,"parameters":`...)
				dst = jsonw.AppendParameters(dst, t.Parameters)
			}
			dst = append(dst, `,"data":[`...)
			var err error
			if dst, err = AppendTensorData(dst, t); err != nil {
				return dst, 0, false, err
			}
			dst = append(dst, ']')
		}
		dst = append(dst, '}')
	}
	dst = append(dst, "]}"...)
	hdrLen := len(dst) - start
	// Grow once to the final size: appending tensor after tensor would
	// reallocate a large body several times.
	n := 0
	for _, i := range c.binOuts {
		n += len(resp.Outputs[i].Data)
	}
	dst = slices.Grow(dst, n)
	for _, i := range c.binOuts {
		dst = append(dst, resp.Outputs[i].Data...)
	}
	return dst, hdrLen, len(c.binOuts) > 0, nil
}

// appendMoreParameters continues an open parameters object with p's
// members, leaving out binary_data_size, which the encoder writes.
func appendMoreParameters(dst []byte, p inference.Parameters) []byte {
	if len(p) == 0 {
		return dst
	}
	for _, k := range jsonw.SortedKeys(p) {
		if k == "binary_data_size" {
			continue
		}
		dst = append(dst, ',')
		dst = jsonw.AppendString(dst, k)
		dst = append(dst, ':')
		dst = jsonw.AppendParamValue(dst, p[k])
	}
	return dst
}

const errOutputSize = "output tensor shape does not match size of output for '"

// AppendTensorData writes the elements of t as a flat JSON list, without
// the brackets.
func AppendTensorData(dst []byte, t *inference.Tensor) ([]byte, error) {
	count := inference.ElementCount(t.Shape)
	if count < 0 {
		return dst, inference.Internal("output '%s' has an invalid shape %v", t.Name, t.Shape)
	}
	dt := t.DataType
	switch dt {
	case inference.FP16, inference.BF16:
		return dst, inference.InvalidArg("sending %s data via JSON is not supported. Please use the binary data format for output", dt)
	case inference.Bytes:
		return appendBytesData(dst, t, count)
	default:
	}
	if !dt.Valid() {
		return dst, inference.InvalidArg("Invalid data type for output tensor")
	}
	size := dt.Size()
	if int64(len(t.Data)) != count*int64(size) {
		return dst, inference.Internal("%s%s'", errOutputSize, t.Name)
	}
	d := t.Data
	for i := 0; i < len(d); i += size {
		if i > 0 {
			dst = append(dst, ',')
		}
		switch dt {
		case inference.Bool:
			dst = strconv.AppendBool(dst, d[i] != 0)
		case inference.Uint8:
			dst = strconv.AppendUint(dst, uint64(d[i]), 10)
		case inference.Uint16:
			dst = strconv.AppendUint(dst, uint64(binary.LittleEndian.Uint16(d[i:])), 10)
		case inference.Uint32:
			dst = strconv.AppendUint(dst, uint64(binary.LittleEndian.Uint32(d[i:])), 10)
		case inference.Uint64:
			dst = strconv.AppendUint(dst, binary.LittleEndian.Uint64(d[i:]), 10)
		case inference.Int8:
			dst = strconv.AppendInt(dst, int64(int8(d[i])), 10)
		case inference.Int16:
			dst = strconv.AppendInt(dst, int64(int16(binary.LittleEndian.Uint16(d[i:]))), 10)
		case inference.Int32:
			dst = strconv.AppendInt(dst, int64(int32(binary.LittleEndian.Uint32(d[i:]))), 10)
		case inference.Int64:
			dst = strconv.AppendInt(dst, int64(binary.LittleEndian.Uint64(d[i:])), 10)
		case inference.FP32:
			dst = jsonw.AppendFloat(dst, float64(math.Float32frombits(binary.LittleEndian.Uint32(d[i:]))))
		case inference.FP64:
			dst = jsonw.AppendFloat(dst, math.Float64frombits(binary.LittleEndian.Uint64(d[i:])))
		default: // FP16, BF16, BYTES and invalid types are handled above
		}
	}
	return dst, nil
}

func appendBytesData(dst []byte, t *inference.Tensor, count int64) ([]byte, error) {
	d := t.Data
	off := 0
	for e := int64(0); e < count; e++ {
		if len(d)-off < 4 {
			return dst, inference.Internal("%s%s'", errOutputSize, t.Name)
		}
		l := binary.LittleEndian.Uint32(d[off:])
		off += 4
		if uint64(l) > uint64(len(d)-off) {
			return dst, inference.Internal("%s%s'", errOutputSize, t.Name)
		}
		if e > 0 {
			dst = append(dst, ',')
		}
		dst = jsonw.AppendString(dst, d[off:off+int(l)])
		off += int(l)
	}
	return dst, nil
}

// AppendInt64Array writes vs as a JSON array of integers (a shape).
func AppendInt64Array(dst []byte, vs []int64) []byte {
	dst = append(dst, '[')
	for i, v := range vs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = strconv.AppendInt(dst, v, 10)
	}
	return append(dst, ']')
}
