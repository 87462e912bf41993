// Package spans carries OpenTelemetry spans from one process to another as
// OTLP TracesData: a plugin encodes the spans it ended (Encode) and sends
// them to the host, which decodes them (Decode) into spans its own exporter
// sends on with the host's. It also names the attributes of kpipe's spans,
// the host's and the plugins' alike.
package spans

import (
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// The attributes of kpipe's spans.
const (
	Pipeline  = attribute.Key("kpipe.pipeline")
	Identity  = attribute.Key("kpipe.identity")
	Topic     = attribute.Key("kpipe.topic")
	Partition = attribute.Key("kpipe.partition")
	Seq       = attribute.Key("kpipe.batch.seq")
	Records   = attribute.Key("kpipe.records")
	Bytes     = attribute.Key("kpipe.bytes")
	MinOffset = attribute.Key("kpipe.offset.min")
	MaxOffset = attribute.Key("kpipe.offset.max")
	// NextOffset is a partition's durable position at the end of a run.
	NextOffset = attribute.Key("kpipe.offset.next")
	// Outputs and OutputRecords count what came out of a transform.
	Outputs       = attribute.Key("kpipe.outputs")
	OutputRecords = attribute.Key("kpipe.outputs.records")
)

// Encode serializes spans as one OTLP TracesData message, a ResourceSpans
// per run of spans that share a resource and a ScopeSpans per run that
// share a scope.
func Encode(spans []sdktrace.ReadOnlySpan) ([]byte, error) {
	td := &tracepb.TracesData{}
	var rs *tracepb.ResourceSpans
	var ss *tracepb.ScopeSpans
	var lastRes *resource.Resource
	var lastScope instrumentation.Scope
	for _, s := range spans {
		if rs == nil || s.Resource() != lastRes {
			lastRes = s.Resource()
			rs = &tracepb.ResourceSpans{Resource: &resourcepb.Resource{Attributes: attrsToProto(lastRes.Attributes())}, SchemaUrl: lastRes.SchemaURL()}
			td.ResourceSpans = append(td.ResourceSpans, rs)
			ss = nil
		}
		if ss == nil || s.InstrumentationScope() != lastScope {
			lastScope = s.InstrumentationScope()
			ss = &tracepb.ScopeSpans{Scope: &commonpb.InstrumentationScope{Name: lastScope.Name, Version: lastScope.Version}, SchemaUrl: lastScope.SchemaURL}
			rs.ScopeSpans = append(rs.ScopeSpans, ss)
		}
		ss.Spans = append(ss.Spans, spanToProto(s))
	}
	return proto.Marshal(td)
}

func spanToProto(s sdktrace.ReadOnlySpan) *tracepb.Span {
	sc := s.SpanContext()
	tid, sid := sc.TraceID(), sc.SpanID()
	p := &tracepb.Span{
		TraceId: tid[:], SpanId: sid[:], TraceState: sc.TraceState().String(),
		Name: s.Name(), Kind: tracepb.Span_SpanKind(s.SpanKind()),
		StartTimeUnixNano: unixNano(s.StartTime()), EndTimeUnixNano: unixNano(s.EndTime()),
		Attributes: attrsToProto(s.Attributes()), Flags: uint32(sc.TraceFlags()),
		Status: &tracepb.Status{Message: s.Status().Description, Code: statusToProto(s.Status().Code)},
	}
	if psid := s.Parent().SpanID(); s.Parent().IsValid() {
		p.ParentSpanId = psid[:]
	}
	for _, e := range s.Events() {
		p.Events = append(p.Events, &tracepb.Span_Event{Name: e.Name, TimeUnixNano: unixNano(e.Time), Attributes: attrsToProto(e.Attributes)})
	}
	for _, l := range s.Links() {
		ltid, lsid := l.SpanContext.TraceID(), l.SpanContext.SpanID()
		p.Links = append(p.Links, &tracepb.Span_Link{TraceId: ltid[:], SpanId: lsid[:],
			TraceState: l.SpanContext.TraceState().String(), Attributes: attrsToProto(l.Attributes)})
	}
	return p
}

// Decode reads what Encode wrote into spans an exporter can take.
func Decode(data []byte) ([]sdktrace.ReadOnlySpan, error) {
	td := &tracepb.TracesData{}
	if err := proto.Unmarshal(data, td); err != nil {
		return nil, fmt.Errorf("spans: %w", err)
	}
	var stubs tracetest.SpanStubs
	for _, rs := range td.GetResourceSpans() {
		res := resource.NewWithAttributes(rs.GetSchemaUrl(), attrsFromProto(rs.GetResource().GetAttributes())...)
		for _, ss := range rs.GetScopeSpans() {
			scope := instrumentation.Scope{Name: ss.GetScope().GetName(), Version: ss.GetScope().GetVersion(), SchemaURL: ss.GetSchemaUrl()}
			for _, p := range ss.GetSpans() {
				stub, err := spanFromProto(p)
				if err != nil {
					return nil, err
				}
				stub.Resource, stub.InstrumentationScope = res, scope
				stubs = append(stubs, stub)
			}
		}
	}
	return stubs.Snapshots(), nil
}

func spanFromProto(p *tracepb.Span) (tracetest.SpanStub, error) {
	var tid trace.TraceID
	var sid trace.SpanID
	if len(p.GetTraceId()) != len(tid) || len(p.GetSpanId()) != len(sid) {
		return tracetest.SpanStub{}, fmt.Errorf("spans: span %q has a trace id of %d bytes and a span id of %d, want 16 and 8", p.GetName(), len(p.GetTraceId()), len(p.GetSpanId()))
	}
	copy(tid[:], p.GetTraceId())
	copy(sid[:], p.GetSpanId())
	ts, err := trace.ParseTraceState(p.GetTraceState())
	if err != nil {
		return tracetest.SpanStub{}, fmt.Errorf("spans: span %q: %w", p.GetName(), err)
	}
	flags := trace.TraceFlags(p.GetFlags() & 0xff)
	stub := tracetest.SpanStub{
		Name:        p.GetName(),
		SpanContext: trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: flags, TraceState: ts}),
		SpanKind:    trace.SpanKind(p.GetKind()),
		StartTime:   fromUnixNano(p.GetStartTimeUnixNano()),
		EndTime:     fromUnixNano(p.GetEndTimeUnixNano()),
		Attributes:  attrsFromProto(p.GetAttributes()),
		Status:      sdktrace.Status{Code: statusFromProto(p.GetStatus().GetCode()), Description: p.GetStatus().GetMessage()},
	}
	if len(p.GetParentSpanId()) == len(sid) {
		var psid trace.SpanID
		copy(psid[:], p.GetParentSpanId())
		stub.Parent = trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: psid, TraceFlags: flags, Remote: true})
	}
	for _, e := range p.GetEvents() {
		stub.Events = append(stub.Events, sdktrace.Event{Name: e.GetName(), Time: fromUnixNano(e.GetTimeUnixNano()), Attributes: attrsFromProto(e.GetAttributes())})
	}
	for _, l := range p.GetLinks() {
		var ltid trace.TraceID
		var lsid trace.SpanID
		copy(ltid[:], l.GetTraceId())
		copy(lsid[:], l.GetSpanId())
		lts, _ := trace.ParseTraceState(l.GetTraceState())
		stub.Links = append(stub.Links, sdktrace.Link{
			SpanContext: trace.NewSpanContext(trace.SpanContextConfig{TraceID: ltid, SpanID: lsid, TraceState: lts, Remote: true}),
			Attributes:  attrsFromProto(l.GetAttributes()),
		})
	}
	return stub, nil
}

func unixNano(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(t.UnixNano())
}

func fromUnixNano(n uint64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, int64(n))
}

func statusToProto(c codes.Code) tracepb.Status_StatusCode {
	switch c {
	case codes.Ok:
		return tracepb.Status_STATUS_CODE_OK
	case codes.Error:
		return tracepb.Status_STATUS_CODE_ERROR
	}
	return tracepb.Status_STATUS_CODE_UNSET
}

func statusFromProto(c tracepb.Status_StatusCode) codes.Code {
	switch c {
	case tracepb.Status_STATUS_CODE_OK:
		return codes.Ok
	case tracepb.Status_STATUS_CODE_ERROR:
		return codes.Error
	}
	return codes.Unset
}

func attrsToProto(kvs []attribute.KeyValue) []*commonpb.KeyValue {
	out := make([]*commonpb.KeyValue, 0, len(kvs))
	for _, kv := range kvs {
		out = append(out, &commonpb.KeyValue{Key: string(kv.Key), Value: valueToProto(kv.Value)})
	}
	return out
}

func valueToProto(v attribute.Value) *commonpb.AnyValue {
	switch v.Type() {
	case attribute.BOOL:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: v.AsBool()}}
	case attribute.INT64:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: v.AsInt64()}}
	case attribute.FLOAT64:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: v.AsFloat64()}}
	case attribute.BOOLSLICE:
		return array(v.AsBoolSlice(), func(b bool) attribute.Value { return attribute.BoolValue(b) })
	case attribute.INT64SLICE:
		return array(v.AsInt64Slice(), func(n int64) attribute.Value { return attribute.Int64Value(n) })
	case attribute.FLOAT64SLICE:
		return array(v.AsFloat64Slice(), func(f float64) attribute.Value { return attribute.Float64Value(f) })
	case attribute.STRINGSLICE:
		return array(v.AsStringSlice(), func(s string) attribute.Value { return attribute.StringValue(s) })
	}
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v.Emit()}}
}

func array[T any](xs []T, value func(T) attribute.Value) *commonpb.AnyValue {
	vs := make([]*commonpb.AnyValue, len(xs))
	for i, x := range xs {
		vs[i] = valueToProto(value(x))
	}
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{Values: vs}}}
}

func attrsFromProto(kvs []*commonpb.KeyValue) []attribute.KeyValue {
	if len(kvs) == 0 {
		return nil
	}
	out := make([]attribute.KeyValue, 0, len(kvs))
	for _, kv := range kvs {
		out = append(out, attribute.KeyValue{Key: attribute.Key(kv.GetKey()), Value: valueFromProto(kv.GetValue())})
	}
	return out
}

// valueFromProto reads what valueToProto writes; an array whose first value
// is not a bool, int or double reads as strings.
func valueFromProto(v *commonpb.AnyValue) attribute.Value {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_BoolValue:
		return attribute.BoolValue(x.BoolValue)
	case *commonpb.AnyValue_IntValue:
		return attribute.Int64Value(x.IntValue)
	case *commonpb.AnyValue_DoubleValue:
		return attribute.Float64Value(x.DoubleValue)
	case *commonpb.AnyValue_ArrayValue:
		vs := x.ArrayValue.GetValues()
		if len(vs) > 0 {
			switch vs[0].GetValue().(type) {
			case *commonpb.AnyValue_BoolValue:
				return attribute.BoolSliceValue(each(vs, (*commonpb.AnyValue).GetBoolValue))
			case *commonpb.AnyValue_IntValue:
				return attribute.Int64SliceValue(each(vs, (*commonpb.AnyValue).GetIntValue))
			case *commonpb.AnyValue_DoubleValue:
				return attribute.Float64SliceValue(each(vs, (*commonpb.AnyValue).GetDoubleValue))
			}
		}
		return attribute.StringSliceValue(each(vs, (*commonpb.AnyValue).GetStringValue))
	}
	return attribute.StringValue(v.GetStringValue())
}

func each[T any](vs []*commonpb.AnyValue, get func(*commonpb.AnyValue) T) []T {
	out := make([]T, len(vs))
	for i, v := range vs {
		out[i] = get(v)
	}
	return out
}
