package httpfront

import (
	"sort"
	"strconv"

	"github.com/nereid-project/nereid/jsonw"
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/repository"
	"github.com/nereid-project/nereid/server/v2wire"
)

// appendServerMetadata writes {"name","version","extensions":[...]}.
func appendServerMetadata(dst []byte, md *inferencepb.ServerMetadataResponse) []byte {
	dst = append(dst, `{"name":`...)
	dst = jsonw.AppendString(dst, md.GetName())
	dst = append(dst, `,"version":`...)
	dst = jsonw.AppendString(dst, md.GetVersion())
	dst = append(dst, `,"extensions":`...)
	dst = appendStringArray(dst, md.GetExtensions())
	return append(dst, '}')
}

// appendModelMetadata writes {"name","versions","platform","inputs",
// "outputs"} with tensors as {"name","datatype","shape"}.
func appendModelMetadata(dst []byte, md *inferencepb.ModelMetadataResponse) []byte {
	dst = append(dst, `{"name":`...)
	dst = jsonw.AppendString(dst, md.GetName())
	dst = append(dst, `,"versions":`...)
	dst = appendStringArray(dst, md.GetVersions())
	dst = append(dst, `,"platform":`...)
	dst = jsonw.AppendString(dst, md.GetPlatform())
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
		dst = jsonw.AppendString(dst, t.GetName())
		dst = append(dst, `,"datatype":`...)
		dst = jsonw.AppendString(dst, t.GetDatatype())
		dst = append(dst, `,"shape":`...)
		dst = v2wire.AppendInt64Array(dst, t.GetShape())
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
		dst = jsonw.AppendString(dst, s)
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
		dst = jsonw.AppendString(dst, e.Name)
		if e.Version != "" {
			dst = append(dst, `,"version":`...)
			dst = jsonw.AppendString(dst, e.Version)
		}
		if e.State != "" {
			dst = append(dst, `,"state":`...)
			dst = jsonw.AppendString(dst, string(e.State))
		}
		if e.Reason != "" {
			dst = append(dst, `,"reason":`...)
			dst = jsonw.AppendString(dst, e.Reason)
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
		dst = jsonw.AppendString(dst, m.GetName())
		dst = append(dst, `,"version":`...)
		dst = jsonw.AppendString(dst, m.GetVersion())
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
			dst = jsonw.AppendString(dst, k)
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
			dst = jsonw.AppendString(dst, u.GetType())
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
	dst = jsonw.AppendString(dst, key)
	dst = append(dst, `:{"count":`...)
	dst = strconv.AppendUint(dst, d.GetCount(), 10)
	dst = append(dst, `,"ns":`...)
	dst = strconv.AppendUint(dst, d.GetNs(), 10)
	return append(dst, '}')
}
