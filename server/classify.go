package server

import (
	"cmp"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// paramClassification is the requested-output parameter of Triton's
// classification extension.
const paramClassification = "classification"

// loadLabels reads the label file of every output that names one in
// label_filename: a file in the model directory with one label per line,
// line i labelling class index i.
func loadLabels(modelDir string, cfg *inferencepb.ModelConfig) (map[string][]string, error) {
	var labels map[string][]string
	for _, out := range cfg.GetOutput() {
		file := out.GetLabelFilename()
		if file == "" {
			continue
		}
		// A load request's config may name the file: keep it inside the
		// model directory.
		if !filepath.IsLocal(file) {
			return nil, inference.InvalidArg("the label file '%s' of output '%s' of model '%s' must be a relative path inside the model directory", file, out.GetName(), cfg.GetName())
		}
		text, err := os.ReadFile(filepath.Join(modelDir, file))
		if err != nil {
			return nil, inference.InvalidArg("unable to read the label file '%s' of output '%s' of model '%s': %v", file, out.GetName(), cfg.GetName(), err)
		}
		if labels == nil {
			labels = map[string][]string{}
		}
		labels[out.GetName()] = parseLabels(string(text))
	}
	return labels, nil
}

// parseLabels splits a label file into lines as std::getline does (a final
// newline ends the last label rather than starting an empty one), dropping
// the carriage return of CRLF line ends.
func parseLabels(text string) []string {
	if text == "" {
		return nil
	}
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimSuffix(l, "\r")
	}
	return lines
}

// classCount returns the classification count a requested output asks for;
// 0 when it asks for none.
func classCount(name string, p inference.Parameters) (int, error) {
	v, ok := p[paramClassification]
	if !ok {
		return 0, nil
	}
	var n uint64
	switch x := v.(type) {
	case int64:
		if x < 0 {
			return 0, inference.InvalidArg("invalid value for 'classification' parameter of output '%s', expected >= 0", name)
		}
		n = uint64(x)
	case uint64:
		n = x
	default:
		return 0, inference.InvalidArg("invalid value type for 'classification' parameter of output '%s', expected an integer", name)
	}
	// Triton keeps the count in a uint32; any count beyond the number of
	// classes returns them all.
	return int(min(n, math.MaxUint32)), nil
}

// classify replaces every output requested with "classification: N" by its
// top N classes: a BYTES tensor of "<value>:<index>[:<label>]" strings,
// shaped [batch, N] when the model batches and [N] otherwise (N capped at
// the number of classes per batch entry). resp.Outputs must be in the order
// of req.Outputs, as finish leaves them.
func (lm *loadedModel) classify(req *inference.Request, resp *inference.Response) error {
	for i, o := range req.Outputs {
		n, err := classCount(o.Name, o.Parameters)
		if err != nil {
			return err
		}
		if n == 0 {
			continue
		}
		t, err := classifyTensor(&resp.Outputs[i], n, lm.cfg.GetMaxBatchSize() > 0, lm.labels[o.Name])
		if err != nil {
			return err
		}
		resp.Outputs[i] = t
	}
	return nil
}

// classifyTensor computes the classification tensor of t.
func classifyTensor(t *inference.Tensor, n int, batching bool, labels []string) (inference.Tensor, error) {
	dt := t.DataType
	if !classifiable(dt) {
		return inference.Tensor{}, inference.InvalidArg("class result not available for output due to unsupported type '%s'", dt)
	}
	shape := t.Shape
	batch := int64(0) // 0: no batch dimension
	if batching && len(shape) > 0 {
		batch, shape = shape[0], shape[1:]
	}
	perEntry := inference.ElementCount(shape)
	total := inference.ByteSize(dt, t.Shape)
	if perEntry < 0 || total < 0 || int64(len(t.Data)) != total {
		return inference.Tensor{}, inference.Internal("output '%s' holds %d bytes, which does not match its shape %v", t.Name, len(t.Data), t.Shape)
	}
	k := min(int64(n), perEntry)
	entrySize := int(perEntry) * dt.Size()
	var out []byte
	for e := range max(batch, 1) {
		entry := t.Data[int(e)*entrySize : int(e+1)*entrySize]
		for _, idx := range topIndices(dt, entry, int(k)) {
			s := formatClassValue(dt, entry, idx) + ":" + strconv.Itoa(idx)
			if idx < len(labels) && labels[idx] != "" {
				s += ":" + labels[idx]
			}
			out = inference.AppendBytesElement(out, []byte(s))
		}
	}
	resultShape := []int64{k}
	if batch > 0 {
		resultShape = []int64{batch, k}
	}
	return inference.Tensor{Name: t.Name, DataType: inference.Bytes, Shape: resultShape, Data: out, Parameters: t.Parameters}, nil
}

// classifiable reports whether Triton computes classifications for dt: the
// integer types, FP32 and FP64.
func classifiable(dt inference.DataType) bool {
	switch dt {
	case inference.Uint8, inference.Uint16, inference.Uint32, inference.Uint64,
		inference.Int8, inference.Int16, inference.Int32, inference.Int64,
		inference.FP32, inference.FP64:
		return true
	default:
		return false
	}
}

// topIndices returns the indices of the k largest elements of data, largest
// first; equal values keep their index order (what Triton's std::sort does
// for the class counts of real models, which sorts small arrays by
// insertion).
func topIndices(dt inference.DataType, data []byte, k int) []int {
	switch dt {
	case inference.Uint8:
		return rank(len(data), k, func(i int) uint8 { return data[i] })
	case inference.Uint16:
		return rank(len(data)/2, k, func(i int) uint16 { return binary.LittleEndian.Uint16(data[2*i:]) })
	case inference.Uint32:
		return rank(len(data)/4, k, func(i int) uint32 { return binary.LittleEndian.Uint32(data[4*i:]) })
	case inference.Uint64:
		return rank(len(data)/8, k, func(i int) uint64 { return binary.LittleEndian.Uint64(data[8*i:]) })
	case inference.Int8:
		return rank(len(data), k, func(i int) int8 { return int8(data[i]) })
	case inference.Int16:
		return rank(len(data)/2, k, func(i int) int16 { return int16(binary.LittleEndian.Uint16(data[2*i:])) })
	case inference.Int32:
		return rank(len(data)/4, k, func(i int) int32 { return int32(binary.LittleEndian.Uint32(data[4*i:])) })
	case inference.Int64:
		return rank(len(data)/8, k, func(i int) int64 { return int64(binary.LittleEndian.Uint64(data[8*i:])) })
	case inference.FP32:
		return rank(len(data)/4, k, func(i int) float32 { return math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:])) })
	case inference.FP64:
		return rank(len(data)/8, k, func(i int) float64 { return math.Float64frombits(binary.LittleEndian.Uint64(data[8*i:])) })
	default:
		return nil
	}
}

// rank sorts the indices 0..n-1 by descending value, stably, and keeps k.
// Comparing with > as Triton does leaves NaNs where they are relative to
// the values around them.
func rank[T cmp.Ordered](n, k int, at func(int) T) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return at(idx[a]) > at(idx[b]) })
	return idx[:min(k, n)]
}

// formatClassValue prints element i as C++'s std::to_string does: integers
// in decimal, floating point with "%f" (six decimals).
func formatClassValue(dt inference.DataType, data []byte, i int) string {
	switch dt {
	case inference.Uint8:
		return strconv.FormatUint(uint64(data[i]), 10)
	case inference.Uint16:
		return strconv.FormatUint(uint64(binary.LittleEndian.Uint16(data[2*i:])), 10)
	case inference.Uint32:
		return strconv.FormatUint(uint64(binary.LittleEndian.Uint32(data[4*i:])), 10)
	case inference.Uint64:
		return strconv.FormatUint(binary.LittleEndian.Uint64(data[8*i:]), 10)
	case inference.Int8:
		return strconv.FormatInt(int64(int8(data[i])), 10)
	case inference.Int16:
		return strconv.FormatInt(int64(int16(binary.LittleEndian.Uint16(data[2*i:]))), 10)
	case inference.Int32:
		return strconv.FormatInt(int64(int32(binary.LittleEndian.Uint32(data[4*i:]))), 10)
	case inference.Int64:
		return strconv.FormatInt(int64(binary.LittleEndian.Uint64(data[8*i:])), 10)
	case inference.FP32:
		return formatCFloat(float64(math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))))
	case inference.FP64:
		return formatCFloat(math.Float64frombits(binary.LittleEndian.Uint64(data[8*i:])))
	default:
		return ""
	}
}

// formatCFloat is printf("%f", v) as glibc prints it, infinities and NaNs
// included.
func formatCFloat(v float64) string {
	switch {
	case math.IsNaN(v):
		if math.Signbit(v) {
			return "-nan"
		}
		return "nan"
	case math.IsInf(v, 1):
		return "inf"
	case math.IsInf(v, -1):
		return "-inf"
	}
	return strconv.FormatFloat(v, 'f', 6, 64)
}
