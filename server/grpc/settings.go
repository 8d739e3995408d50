package grpcfront

import (
	"context"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/logging"
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/server/restricted"
	"github.com/nereid-project/nereid/trace"
)

// methodCategories maps each RPC to its restricted-protocol category, as
// Triton's gRPC front end checks them.
var methodCategories = map[string]restricted.Category{
	"ServerLive": restricted.Health, "ServerReady": restricted.Health, "ModelReady": restricted.Health,
	"ServerMetadata": restricted.Metadata, "ModelMetadata": restricted.Metadata,
	"ModelInfer": restricted.Inference, "ModelStreamInfer": restricted.Inference,
	"ModelConfig":     restricted.ModelConfig,
	"ModelStatistics": restricted.Statistics,
	"RepositoryIndex": restricted.ModelRepository, "RepositoryModelLoad": restricted.ModelRepository,
	"RepositoryModelUnload":    restricted.ModelRepository,
	"SystemSharedMemoryStatus": restricted.SharedMemory, "SystemSharedMemoryRegister": restricted.SharedMemory,
	"SystemSharedMemoryUnregister": restricted.SharedMemory, "CudaSharedMemoryStatus": restricted.SharedMemory,
	"CudaSharedMemoryRegister": restricted.SharedMemory, "CudaSharedMemoryUnregister": restricted.SharedMemory,
	"TraceSetting": restricted.Trace,
	"LogSettings":  restricted.Logging,
	"Check":        restricted.Health, // grpc.health.v1.Health
}

// restrictedError is the status of a call refused for a missing or wrong
// restricted-protocol header: UNAVAILABLE, as in Triton.
func restrictedError(ctx context.Context, rules restricted.Rules, fullMethod string) error {
	if len(rules) == 0 {
		return nil
	}
	cat, ok := methodCategories[fullMethod[strings.LastIndexByte(fullMethod, '/')+1:]]
	if !ok {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	rule, ok := rules.Allowed(cat, func(name string) (string, bool) {
		if v := md.Get(name); len(v) > 0 {
			return v[0], true
		}
		return "", false
	})
	if ok {
		return nil
	}
	return toStatus(inference.PermissionDenied("This protocol is restricted, expecting header '%s'", rule.Header))
}

func (s *service) restrictUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := restrictedError(ctx, s.restricted, info.FullMethod); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (s *service) restrictStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := restrictedError(ss.Context(), s.restricted, info.FullMethod); err != nil {
		return err
	}
	return handler(srv, ss)
}

// inferTraced runs a request through the core, recording its trace when
// the request is sampled. The response is encoded and sent after this
// returns, so GRPC_SEND_START and GRPC_SEND_END bound the handing over of
// the response to gRPC.
func (s *service) inferTraced(ctx context.Context, req *inference.Request, arrival time.Time) (*inference.Response, error) {
	if s.tracer == nil {
		return s.core.Infer(ctx, req)
	}
	tr := s.tracer.Sample(req.ModelName)
	if tr == nil {
		return s.core.Infer(ctx, req)
	}
	defer tr.Finish()
	tr.Attach(req)
	tr.Record("GRPC_WAITREAD_END", arrival)
	start := time.Now()
	resp, err := s.core.Infer(ctx, req)
	end := time.Now()
	tr.Request(req, resp, start, end)
	if err == nil {
		tr.Record("GRPC_SEND_START", end)
		tr.Record("GRPC_SEND_END", time.Now())
	}
	return resp, err
}

// inferStreamTraced is inferTraced for a stream request: the trace ends
// once the request's last response is queued for the writer.
func (s *service) inferStreamTraced(ctx context.Context, req *inference.Request, arrival time.Time, out inference.ResponseFunc) error {
	var tr *trace.Trace
	if s.tracer != nil {
		tr = s.tracer.Sample(req.ModelName)
	}
	if tr == nil {
		return s.core.InferStream(ctx, req, out)
	}
	defer tr.Finish()
	tr.Attach(req)
	tr.Record("GRPC_WAITREAD_END", arrival)
	start := time.Now()
	var last *inference.Response
	err := s.core.InferStream(ctx, req, func(resp *inference.Response, final bool) error {
		if resp != nil {
			last = resp
		}
		return out(resp, final)
	})
	end := time.Now()
	tr.Request(req, last, start, end)
	if err == nil {
		tr.Record("GRPC_SEND_START", end)
		tr.Record("GRPC_SEND_END", time.Now())
	}
	return err
}

// TraceSetting reads or updates the global trace settings (empty
// model_name) or a model's. An empty value list clears a model's setting.
func (s *service) TraceSetting(ctx context.Context, in *inferencepb.TraceSettingRequest) (*inferencepb.TraceSettingResponse, error) {
	if s.tracer == nil {
		return nil, toStatus(inference.Unavailable("the server does not support trace"))
	}
	model := in.GetModelName()
	if model != "" {
		ready, err := s.core.ModelReady(ctx, model, "")
		if err != nil && !inference.MeansNotReady(err) {
			return nil, toStatus(err)
		}
		if !ready || err != nil {
			// Triton's answer for a model that is unknown or not ready.
			return nil, toStatus(inference.InvalidArg("Request for unknown model : %s", model))
		}
	}
	var settings trace.Settings
	if len(in.GetSettings()) > 0 {
		kv := make(map[string][]string, len(in.GetSettings()))
		for k, v := range in.GetSettings() {
			kv[k] = v.GetValue()
		}
		u, err := trace.ParseUpdate(kv)
		if err != nil {
			return nil, toStatus(err)
		}
		if settings, err = s.tracer.Update(model, u); err != nil {
			return nil, toStatus(err)
		}
	} else {
		settings = s.tracer.Settings(model)
	}
	out := &inferencepb.TraceSettingResponse{Settings: map[string]*inferencepb.TraceSettingResponse_SettingValue{}}
	for _, p := range settings.Pairs() {
		out.Settings[p.Key] = &inferencepb.TraceSettingResponse_SettingValue{Value: p.Values}
	}
	return out, nil
}

// LogSettings reads or updates the log controls; every response carries
// all of them.
func (s *service) LogSettings(_ context.Context, in *inferencepb.LogSettingsRequest) (*inferencepb.LogSettingsResponse, error) {
	if s.logging == nil {
		return nil, toStatus(inference.Unavailable("the server does not support dynamic logging"))
	}
	settings := s.logging.Settings()
	if len(in.GetSettings()) > 0 {
		u, err := logUpdate(in.GetSettings())
		if err != nil {
			return nil, toStatus(err)
		}
		settings = s.logging.Apply(u)
	}
	str := func(v string) *inferencepb.LogSettingsResponse_SettingValue {
		return &inferencepb.LogSettingsResponse_SettingValue{ParameterChoice: &inferencepb.LogSettingsResponse_SettingValue_StringParam{StringParam: v}}
	}
	boolean := func(v bool) *inferencepb.LogSettingsResponse_SettingValue {
		return &inferencepb.LogSettingsResponse_SettingValue{ParameterChoice: &inferencepb.LogSettingsResponse_SettingValue_BoolParam{BoolParam: v}}
	}
	return &inferencepb.LogSettingsResponse{Settings: map[string]*inferencepb.LogSettingsResponse_SettingValue{
		"log_file":          str(settings.File),
		"log_info":          boolean(settings.Info),
		"log_warning":       boolean(settings.Warning),
		"log_error":         boolean(settings.Error),
		"log_verbose_level": {ParameterChoice: &inferencepb.LogSettingsResponse_SettingValue_Uint32Param{Uint32Param: settings.VerboseLevel}},
		"log_format":        str(settings.Format.String()),
	}}, nil
}

// logUpdate applies Triton's checks to LogSettings values: log_file is
// refused whatever its value, the others must have their types.
func logUpdate(settings map[string]*inferencepb.LogSettingsRequest_SettingValue) (logging.Update, error) {
	var u logging.Update
	for k := range settings {
		switch k {
		case "log_file", "log_info", "log_warning", "log_error", "log_verbose_level", "log_format":
		default:
			return u, inference.InvalidArg("unknown log setting '%s'; the settings are log_file, log_info, log_warning, log_error, log_verbose_level and log_format", k)
		}
	}
	if _, ok := settings["log_file"]; ok {
		return u, inference.Unsupported("log file location can not be updated through network protocol")
	}
	boolean := func(key string) (*bool, error) {
		v, ok := settings[key]
		if !ok {
			return nil, nil
		}
		b, ok := v.GetParameterChoice().(*inferencepb.LogSettingsRequest_SettingValue_BoolParam)
		if !ok {
			return nil, inference.InvalidArg("expect boolean for '%s'", key)
		}
		return &b.BoolParam, nil
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
	if v, ok := settings["log_verbose_level"]; ok {
		n, ok := v.GetParameterChoice().(*inferencepb.LogSettingsRequest_SettingValue_Uint32Param)
		if !ok {
			return u, inference.InvalidArg("expect int32 for 'log_verbose_level'")
		}
		u.VerboseLevel = &n.Uint32Param
	}
	if v, ok := settings["log_format"]; ok {
		f, ok := v.GetParameterChoice().(*inferencepb.LogSettingsRequest_SettingValue_StringParam)
		if !ok {
			return u, inference.InvalidArg("expect string for 'log_format'")
		}
		format, ok := logging.ParseFormat(f.StringParam)
		if !ok {
			return u, inference.InvalidArg("invalid argument for log_format, got: %s", f.StringParam)
		}
		u.Format = &format
	}
	return u, nil
}
