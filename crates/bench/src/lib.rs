//! Spans for the benchmarks: what `spanlake-bench` writes into lakes and what the criterion
//! benches (`benches/hot_path.rs`) feed the span path, built the same way.

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

/// The services spans are spread over, one resource group each.
pub const SERVICES: [&str; 4] = ["frontend", "checkout", "payments", "inventory"];

pub fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

/// One resource group per service of [`SERVICES`] (`by_service[k]` are the spans of service
/// `k`), each with a host name, a deployment environment and the `bench` scope.
pub fn resource_groups(by_service: Vec<Vec<Span>>, host: &str) -> Vec<ResourceSpans> {
    by_service
        .into_iter()
        .zip(SERVICES)
        .map(|(spans, service)| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", Value::StringValue(service.into())),
                    kv("host.name", Value::StringValue(host.into())),
                    kv("deployment.environment", Value::StringValue("prod".into())),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "bench".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        })
        .collect()
}
