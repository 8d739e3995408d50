package trace

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	oteltrace "go.opentelemetry.io/otel/trace"
)

// otelExporter turns traces into OpenTelemetry spans, as Triton's
// opentelemetry mode does: a root span "InferRequest" carrying the front
// end's events, a child span named after the model (events REQUEST_START,
// QUEUE_START, REQUEST_END) and under it a span "compute" (COMPUTE_START,
// COMPUTE_INPUT_END, COMPUTE_OUTPUT_START, COMPUTE_END). The SDK batches
// the spans and otlpHTTPExporter sends them over OTLP/HTTP (protobuf) to
// the configured url.
type otelExporter struct {
	provider *sdktrace.TracerProvider
	tracer   oteltrace.Tracer
}

// The --trace-config opentelemetry options Nereid reads: url (default
// http://localhost:4318/v1/traces, as Triton), resource (comma-separated
// key=value attributes) and the batch span processor's bsp_* sizes.
func newOTelExporter(opts map[string]string) (*otelExporter, error) {
	url := opts["url"]
	if url == "" {
		url = "http://localhost:4318/v1/traces"
	}
	if !strings.Contains(url, "://") {
		url = "http://" + url // Triton's examples give host:port/path
	}
	client := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	exp := &otlpHTTPExporter{url: url, client: client}
	attrs := []attribute.KeyValue{attribute.String("service.name", "triton-inference-server")}
	for _, kv := range strings.Split(opts["resource"], ",") {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			attrs = append(attrs, attribute.String(k, v))
		}
	}
	num := func(key string, def int) int {
		if n, err := strconv.Atoi(opts[key]); err == nil && n > 0 {
			return n
		}
		return def
	}
	provider := sdktrace.NewTracerProvider(
		sdktrace.WithResource(resource.NewSchemaless(attrs...)),
		sdktrace.WithSampler(sdktrace.AlwaysSample()),
		sdktrace.WithBatcher(exp,
			sdktrace.WithMaxQueueSize(num("bsp_max_queue_size", 2048)),
			sdktrace.WithBatchTimeout(time.Duration(num("bsp_schedule_delay", 5000))*time.Millisecond),
			sdktrace.WithMaxExportBatchSize(num("bsp_max_export_batch_size", 512))),
	)
	return &otelExporter{provider: provider, tracer: provider.Tracer("triton-server")}, nil
}

var (
	requestEvents = map[string]bool{"REQUEST_START": true, "QUEUE_START": true, "REQUEST_END": true}
	computeEvents = map[string]bool{"COMPUTE_START": true, "COMPUTE_INPUT_END": true, "COMPUTE_OUTPUT_START": true, "COMPUTE_END": true}
)

// export sends a finished trace: the root span with the front end's
// events, the request span, and under the request span its compute span
// and the request spans of its children (an ensemble's steps), nested.
func (e *otelExporter) export(sp *spanRecord) {
	if len(sp.events) == 0 {
		return
	}
	first, last := sp.events[0].at, sp.events[0].at
	for _, ev := range sp.events {
		if ev.at.Before(first) {
			first = ev.at
		}
		if ev.at.After(last) {
			last = ev.at
		}
	}
	ctx, root := e.tracer.Start(context.Background(), "InferRequest",
		oteltrace.WithSpanKind(oteltrace.SpanKindServer), oteltrace.WithTimestamp(first))
	for _, ev := range sp.events {
		if !requestEvents[ev.name] && !computeEvents[ev.name] {
			root.AddEvent(ev.name, oteltrace.WithTimestamp(ev.at))
		}
	}
	e.exportRequest(ctx, sp, last)
	root.End(oteltrace.WithTimestamp(last))
}

// exportRequest sends sp's request span (when it has REQUEST_START) under
// ctx, with its compute span and its children's request spans below it.
func (e *otelExporter) exportRequest(ctx context.Context, sp *spanRecord, last time.Time) {
	find := func(name string) (time.Time, bool) {
		for _, ev := range sp.events {
			if ev.name == name {
				return ev.at, true
			}
		}
		return time.Time{}, false
	}
	start, ok := find("REQUEST_START")
	if !ok {
		return
	}
	end, _ := find("REQUEST_END")
	if end.IsZero() {
		end = last
	}
	rctx, req := e.tracer.Start(ctx, sp.model, oteltrace.WithSpanKind(oteltrace.SpanKindServer), oteltrace.WithTimestamp(start),
		oteltrace.WithAttributes(
			attribute.String("triton.model_name", sp.model),
			attribute.Int64("triton.model_version", sp.version),
			attribute.Int64("triton.trace_id", int64(sp.id)),
			attribute.Int64("triton.trace_parent_id", int64(sp.parent))))
	if sp.requestID != "" {
		req.SetAttributes(attribute.String("triton.request_id", sp.requestID))
	}
	for _, ev := range sp.events {
		if requestEvents[ev.name] {
			req.AddEvent(ev.name, oteltrace.WithTimestamp(ev.at))
		}
	}
	if cstart, ok := find("COMPUTE_START"); ok {
		cend, _ := find("COMPUTE_END")
		_, compute := e.tracer.Start(rctx, "compute", oteltrace.WithSpanKind(oteltrace.SpanKindServer), oteltrace.WithTimestamp(cstart))
		for _, ev := range sp.events {
			if computeEvents[ev.name] {
				compute.AddEvent(ev.name, oteltrace.WithTimestamp(ev.at))
			}
		}
		compute.End(oteltrace.WithTimestamp(cend))
	}
	for _, c := range sp.children {
		e.exportRequest(rctx, c, end)
	}
	req.End(oteltrace.WithTimestamp(end))
}

// shutdown sends the spans still batched and stops the exporter.
func (e *otelExporter) shutdown(ctx context.Context) error {
	err := e.provider.Shutdown(ctx)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
