package httpfront

import (
	"bytes"
	"encoding/json"
	"strconv"

	"github.com/valyala/fasthttp"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/jsonw"
	"github.com/nereid-project/nereid/logging"
	"github.com/nereid-project/nereid/server/restricted"
	"github.com/nereid-project/nereid/trace"
)

// routeCategory is the restricted-API category of an endpoint (Triton's
// RETURN_AND_RESPOND_IF_RESTRICTED calls in src/http_server.cc).
func routeCategory(k routeKind) (restricted.Category, bool) {
	switch k {
	case routeHealthLive, routeHealthReady, routeModelReady:
		return restricted.Health, true
	case routeServerMetadata, routeModelMetadata:
		return restricted.Metadata, true
	case routeModelInfer, routeModelGenerate, routeModelGenerateStream:
		return restricted.Inference, true
	case routeModelConfig:
		return restricted.ModelConfig, true
	case routeStatsAll, routeModelStats:
		return restricted.Statistics, true
	case routeRepoIndex, routeRepoLoad, routeRepoUnload:
		return restricted.ModelRepository, true
	case routeSystemShm, routeCudaShm:
		return restricted.SharedMemory, true
	case routeTrace, routeModelTrace:
		return restricted.Trace, true
	case routeLogging:
		return restricted.Logging, true
	default:
		return "", false
	}
}

// allowed answers 403 when the route's category is restricted and the
// request lacks the expected header, as Triton does. Header names compare
// without regard to case.
func (s *Server) allowed(ctx *fasthttp.RequestCtx, k routeKind) bool {
	if len(s.opts.Restricted) == 0 {
		return true
	}
	cat, ok := routeCategory(k)
	if !ok {
		return true
	}
	rule, ok := s.opts.Restricted.Allowed(cat, func(name string) (string, bool) {
		for k, v := range ctx.Request.Header.All() {
			if bytes.EqualFold(k, []byte(name)) {
				return string(v), true
			}
		}
		return "", false
	})
	if !ok {
		respondErr(ctx, inference.PermissionDenied("This API is restricted, expecting header '%s'", rule.Header))
	}
	return ok
}

// sampleTrace returns the trace of a request to model, or nil.
func (s *Server) sampleTrace(model string) *trace.Trace {
	if s.opts.Tracer == nil {
		return nil
	}
	return s.opts.Tracer.Sample(model)
}

// logging serves GET and POST /v2/logging.
func (s *Server) logging(ctx *fasthttp.RequestCtx) {
	if s.opts.Logging == nil {
		respondErr(ctx, inference.Unavailable("the server does not support dynamic logging"))
		return
	}
	settings := s.opts.Logging.Settings()
	if ctx.IsPost() {
		u, err := parseLogUpdate(ctx.PostBody())
		if err != nil {
			respondErr(ctx, err)
			return
		}
		settings = s.opts.Logging.Apply(u)
	}
	b := []byte(`{"log_file":`)
	b = jsonw.AppendString(b, settings.File)
	b = append(b, `,"log_info":`...)
	b = strconv.AppendBool(b, settings.Info)
	b = append(b, `,"log_warning":`...)
	b = strconv.AppendBool(b, settings.Warning)
	b = append(b, `,"log_error":`...)
	b = strconv.AppendBool(b, settings.Error)
	b = append(b, `,"log_verbose_level":`...)
	b = strconv.AppendUint(b, uint64(settings.VerboseLevel), 10)
	b = append(b, `,"log_format":`...)
	b = jsonw.AppendString(b, settings.Format.String())
	b = append(b, '}')
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType(contentTypeJSON)
	ctx.SetBody(b)
}

// Texts of Triton's JSON accessors, which its logging endpoint returns for
// values of the wrong type.
const (
	msgJSONNotBool   = "attempt to access JSON non-boolean as boolean"
	msgJSONNotUint   = "attempt to access JSON non-unsigned-integer as unsigned-integer"
	msgJSONNotString = "attempt to access JSON non-string as string"
)

// parseLogUpdate reads a POST /v2/logging body: any subset of the keys;
// null leaves a setting as it is; log_file other than null is refused.
func parseLogUpdate(body []byte) (logging.Update, error) {
	var u logging.Update
	var m map[string]json.RawMessage
	if len(bytes.TrimSpace(body)) > 0 {
		if err := json.Unmarshal(body, &m); err != nil {
			return u, inference.InvalidArg("failed to parse the request JSON buffer: %v", err)
		}
	}
	isNull := func(v json.RawMessage) bool { return string(bytes.TrimSpace(v)) == "null" }
	if v, ok := m["log_file"]; ok && !isNull(v) {
		return u, inference.Unsupported("log file location can not be updated through network protocol")
	}
	boolean := func(key string) (*bool, error) {
		v, ok := m[key]
		if !ok || isNull(v) {
			return nil, nil
		}
		var b bool
		if err := json.Unmarshal(v, &b); err != nil {
			return nil, inference.InvalidArg("%s", msgJSONNotBool)
		}
		return &b, nil
	}
	var err error
	if u.Info, err = boolean("log_info"); err != nil {
		return u, err
	}
	if u.Warning, err = boolean("log_warning"); err != nil {
		return u, err
	}
	if u.Error, err = boolean("log_error"); err != nil {
		return u, err
	}
	if v, ok := m["log_verbose_level"]; ok && !isNull(v) {
		n, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 32)
		if err != nil {
			return u, inference.InvalidArg("%s", msgJSONNotUint)
		}
		level := uint32(n)
		u.VerboseLevel = &level
	}
	if v, ok := m["log_format"]; ok && !isNull(v) {
		var f string
		if err := json.Unmarshal(v, &f); err != nil {
			return u, inference.InvalidArg("%s", msgJSONNotString)
		}
		format, ok := logging.ParseFormat(f)
		if !ok {
			return u, inference.InvalidArg("invalid argument for --log_format, got: %s", f)
		}
		u.Format = &format
	}
	for k := range m {
		switch k {
		case "log_file", "log_info", "log_warning", "log_error", "log_verbose_level", "log_format":
		default:
			return u, inference.InvalidArg("unknown log setting '%s'; the settings are log_file, log_info, log_warning, log_error, log_verbose_level and log_format", k)
		}
	}
	return u, nil
}

// traceSetting serves GET and POST /v2/trace/setting and
// /v2/models/{m}/trace/setting.
func (s *Server) traceSetting(ctx *fasthttp.RequestCtx, model string) {
	if s.opts.Tracer == nil {
		respondErr(ctx, inference.Unavailable("the server does not support tracing"))
		return
	}
	if model != "" {
		if err := s.traceModelKnown(model); err != nil {
			respondErr(ctx, err)
			return
		}
	}
	var settings trace.Settings
	if ctx.IsPost() {
		kv, err := parseTraceBody(ctx.PostBody())
		if err != nil {
			respondErr(ctx, err)
			return
		}
		u, err := trace.ParseUpdate(kv)
		if err != nil {
			respondErr(ctx, err)
			return
		}
		if settings, err = s.opts.Tracer.Update(model, u); err != nil {
			respondErr(ctx, err)
			return
		}
	} else {
		settings = s.opts.Tracer.Settings(model)
	}
	b := []byte{'{'}
	for i, p := range settings.Pairs() {
		if i > 0 {
			b = append(b, ',')
		}
		b = jsonw.AppendString(b, p.Key)
		b = append(b, ':')
		if p.Array {
			b = append(b, '[')
			for j, v := range p.Values {
				if j > 0 {
					b = append(b, ',')
				}
				b = jsonw.AppendString(b, v)
			}
			b = append(b, ']')
		} else {
			b = jsonw.AppendString(b, p.Values[0])
		}
	}
	b = append(b, '}')
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType(contentTypeJSON)
	ctx.SetBody(b)
}

// traceModelKnown refuses trace settings for a model that has no ready
// version, with Triton's text.
func (s *Server) traceModelKnown(model string) error {
	ready, err := s.core.ModelReady(s.baseCtx, model, "")
	if err != nil && !inference.MeansNotReady(err) {
		return err
	}
	if !ready || err != nil {
		// Triton's answer for a model that is unknown or not ready.
		return inference.InvalidArg("Request for unknown model : %s", model)
	}
	return nil
}

// parseTraceBody reads a POST trace settings body into key -> values (nil
// for null): trace_level is an array of strings, the others strings.
func parseTraceBody(body []byte) (map[string][]string, error) {
	var m map[string]json.RawMessage
	if len(bytes.TrimSpace(body)) > 0 {
		if err := json.Unmarshal(body, &m); err != nil {
			return nil, inference.InvalidArg("failed to parse the request JSON buffer: %v", err)
		}
	}
	out := make(map[string][]string, len(m))
	for k, v := range m {
		if string(bytes.TrimSpace(v)) == "null" {
			out[k] = nil
			continue
		}
		if k == trace.KeyLevel {
			var levels []string
			if err := json.Unmarshal(v, &levels); err != nil {
				return nil, inference.InvalidArg("attempt to access JSON non-array as array")
			}
			if levels == nil {
				levels = []string{}
			}
			out[k] = levels
			continue
		}
		var str string
		if err := json.Unmarshal(v, &str); err != nil {
			return nil, inference.InvalidArg("%s", msgJSONNotString)
		}
		out[k] = []string{str}
	}
	return out, nil
}
