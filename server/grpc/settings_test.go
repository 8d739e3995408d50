package grpcfront

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/nereid-project/nereid/logging"
	"github.com/nereid-project/nereid/proto/healthpb"
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/server/restricted"
	"github.com/nereid-project/nereid/trace"
)

func logValue(v *inferencepb.LogSettingsResponse_SettingValue) any {
	switch p := v.GetParameterChoice().(type) {
	case *inferencepb.LogSettingsResponse_SettingValue_BoolParam:
		return p.BoolParam
	case *inferencepb.LogSettingsResponse_SettingValue_Uint32Param:
		return p.Uint32Param
	case *inferencepb.LogSettingsResponse_SettingValue_StringParam:
		return p.StringParam
	}
	return nil
}

func TestLogSettings(t *testing.T) {
	lc, _, err := logging.New(logging.Options{Info: true, Warning: true, Error: true, Out: &bytes.Buffer{}})
	if err != nil {
		t.Fatal(err)
	}
	c := start(t, &fakeCore{}, Options{Logging: lc})
	ctx := testCtx(t)
	resp, err := c.infer.LogSettings(ctx, &inferencepb.LogSettingsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"log_file": "", "log_info": true, "log_warning": true, "log_error": true, "log_verbose_level": uint32(0), "log_format": "default"}
	for k, v := range want {
		if got := logValue(resp.GetSettings()[k]); got != v {
			t.Errorf("%s = %v, want %v", k, got, v)
		}
	}
	set := func(kv map[string]*inferencepb.LogSettingsRequest_SettingValue) (*inferencepb.LogSettingsResponse, error) {
		return c.infer.LogSettings(ctx, &inferencepb.LogSettingsRequest{Settings: kv})
	}
	b := func(v bool) *inferencepb.LogSettingsRequest_SettingValue {
		return &inferencepb.LogSettingsRequest_SettingValue{ParameterChoice: &inferencepb.LogSettingsRequest_SettingValue_BoolParam{BoolParam: v}}
	}
	u := func(v uint32) *inferencepb.LogSettingsRequest_SettingValue {
		return &inferencepb.LogSettingsRequest_SettingValue{ParameterChoice: &inferencepb.LogSettingsRequest_SettingValue_Uint32Param{Uint32Param: v}}
	}
	s := func(v string) *inferencepb.LogSettingsRequest_SettingValue {
		return &inferencepb.LogSettingsRequest_SettingValue{ParameterChoice: &inferencepb.LogSettingsRequest_SettingValue_StringParam{StringParam: v}}
	}
	resp, err = set(map[string]*inferencepb.LogSettingsRequest_SettingValue{"log_warning": b(false), "log_verbose_level": u(3), "log_format": s("ISO8601")})
	if err != nil {
		t.Fatal(err)
	}
	if logValue(resp.Settings["log_warning"]) != false || logValue(resp.Settings["log_verbose_level"]) != uint32(3) ||
		logValue(resp.Settings["log_format"]) != "ISO8601" || logValue(resp.Settings["log_info"]) != true {
		t.Errorf("after update %v", resp.Settings)
	}
	for _, tc := range []struct {
		kv   map[string]*inferencepb.LogSettingsRequest_SettingValue
		code codes.Code
		msg  string
	}{
		{map[string]*inferencepb.LogSettingsRequest_SettingValue{"log_file": s("")}, codes.Unimplemented, "log file location can not be updated through network protocol"},
		{map[string]*inferencepb.LogSettingsRequest_SettingValue{"log_info": u(1)}, codes.InvalidArgument, "expect boolean for 'log_info'"},
		{map[string]*inferencepb.LogSettingsRequest_SettingValue{"log_verbose_level": b(true)}, codes.InvalidArgument, "expect int32 for 'log_verbose_level'"},
		{map[string]*inferencepb.LogSettingsRequest_SettingValue{"log_format": b(true)}, codes.InvalidArgument, "expect string for 'log_format'"},
		{map[string]*inferencepb.LogSettingsRequest_SettingValue{"log_format": s("json")}, codes.InvalidArgument, "invalid argument for log_format, got: json"},
		{map[string]*inferencepb.LogSettingsRequest_SettingValue{"verbose": u(1)}, codes.InvalidArgument, "unknown log setting 'verbose'"},
	} {
		_, err := set(tc.kv)
		wantCode(t, err, tc.code, tc.msg)
	}
}

func TestTraceSetting(t *testing.T) {
	file := filepath.Join(t.TempDir(), "t.json")
	st, err := trace.ParseConfig([]string{"triton,file=" + file})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := trace.New(trace.Options{Settings: st, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close(context.Background())
	c := start(t, &fakeCore{}, Options{Tracer: tr})
	ctx := testCtx(t)
	values := func(r *inferencepb.TraceSettingResponse) map[string][]string {
		out := map[string][]string{}
		for k, v := range r.GetSettings() {
			out[k] = v.GetValue()
		}
		return out
	}
	resp, err := c.infer.TraceSetting(ctx, &inferencepb.TraceSettingRequest{ModelName: "m", Settings: map[string]*inferencepb.TraceSettingRequest_SettingValue{
		"trace_level": {Value: []string{"TIMESTAMPS"}}, "trace_rate": {Value: []string{"5"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	got := values(resp)
	if len(got) != 6 || got["trace_level"][0] != "TIMESTAMPS" || got["trace_rate"][0] != "5" || got["trace_file"][0] != file || got["trace_mode"][0] != "triton" {
		t.Errorf("model settings %v", got)
	}
	// An empty value list clears the model's setting.
	resp, err = c.infer.TraceSetting(ctx, &inferencepb.TraceSettingRequest{ModelName: "m", Settings: map[string]*inferencepb.TraceSettingRequest_SettingValue{
		"trace_level": {}, "trace_rate": {},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if got := values(resp); got["trace_level"][0] != "OFF" || got["trace_rate"][0] != "1000" {
		t.Errorf("cleared %v", got)
	}
	_, err = c.infer.TraceSetting(ctx, &inferencepb.TraceSettingRequest{Settings: map[string]*inferencepb.TraceSettingRequest_SettingValue{"trace_file": {Value: []string{"x"}}}})
	wantCode(t, err, codes.Unimplemented, "trace file location can not be updated through network protocol")
	_, err = c.infer.TraceSetting(ctx, &inferencepb.TraceSettingRequest{Settings: map[string]*inferencepb.TraceSettingRequest_SettingValue{"trace_rate": {Value: []string{"1", "2"}}}})
	wantCode(t, err, codes.InvalidArgument, "expect only 1 value for 'trace_rate'")
}

func TestRestrictedProtocols(t *testing.T) {
	rules := restricted.Rules{}
	if err := rules.AddGRPC("inference,health:infer-key=secret"); err != nil {
		t.Fatal(err)
	}
	c := start(t, &fakeCore{}, Options{Restricted: rules})
	ctx := testCtx(t)
	_, err := c.infer.ServerLive(ctx, &inferencepb.ServerLiveRequest{})
	wantCode(t, err, codes.Unavailable, "This protocol is restricted, expecting header 'triton-grpc-protocol-infer-key'")
	_, err = c.health.Check(ctx, &healthpb.HealthCheckRequest{})
	wantCode(t, err, codes.Unavailable, "triton-grpc-protocol-infer-key")
	bad := metadata.AppendToOutgoingContext(ctx, "triton-grpc-protocol-infer-key", "wrong")
	_, err = c.infer.ModelInfer(bad, &inferencepb.ModelInferRequest{ModelName: "m"})
	wantCode(t, err, codes.Unavailable, "triton-grpc-protocol-infer-key")
	stream, err := c.infer.ModelStreamInfer(ctx)
	if err == nil {
		_, err = stream.Recv()
	}
	wantCode(t, err, codes.Unavailable, "triton-grpc-protocol-infer-key")

	good := metadata.AppendToOutgoingContext(ctx, "triton-grpc-protocol-infer-key", "secret")
	if _, err := c.infer.ServerLive(good, &inferencepb.ServerLiveRequest{}); err != nil {
		t.Errorf("with the header: %v", err)
	}
	// Unrestricted categories stay open.
	if _, err := c.infer.ServerMetadata(ctx, &inferencepb.ServerMetadataRequest{}); err != nil {
		t.Errorf("metadata: %v", err)
	}
}
