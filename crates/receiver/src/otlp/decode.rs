//! Decoding OTLP requests and refusing spans with invalid ids.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;
use spanlake_core::SpanBlock;
use spanlake_core::ids::{id_problem, to_hex};

pub fn decode_protobuf(body: &[u8]) -> Result<ExportTraceServiceRequest, String> {
    ExportTraceServiceRequest::decode(body).map_err(|e| {
        format!("the body is not a valid OTLP protobuf ExportTraceServiceRequest: {e}")
    })
}

/// OTLP protobuf straight into a span block; spans with invalid ids are refused one by one.
pub fn spans_of_protobuf(body: &[u8]) -> Result<(SpanBlock, Rejections), String> {
    described(SpanBlock::decode(body, true))
}

/// [`spans_of_protobuf`], the block keeping the request's bytes while it is exactly what they
/// give ([`SpanBlock::request`]: the write-ahead log writes them as they are).
pub fn spans_of_request(body: bytes::Bytes) -> Result<(SpanBlock, Rejections), String> {
    described(SpanBlock::decode_request(body, true))
}

/// A decoded request with its refusals described for the client, or why it is not one.
fn described(
    decoded: Result<
        (SpanBlock, spanlake_core::spans::Rejections),
        spanlake_core::spans::DecodeError,
    >,
) -> Result<(SpanBlock, Rejections), String> {
    decoded
        .map(|(block, rej)| {
            let message = rej.message();
            (
                block,
                Rejections {
                    count: rej.count,
                    message,
                },
            )
        })
        .map_err(|e| {
            format!("the body is not a valid OTLP protobuf ExportTraceServiceRequest: {e}")
        })
}

/// OTLP/JSON into a span block; spans with invalid ids are refused one by one.
pub fn spans_of_json(body: &[u8]) -> Result<(SpanBlock, Rejections), String> {
    let mut groups = decode_json(body)?.resource_spans;
    let rej = keep_valid_spans(&mut groups);
    Ok((SpanBlock::from_prost(&groups), rej))
}

/// OTLP/JSON: lowerCamelCase names, hex ids (any case), 64-bit integers as strings or numbers,
/// enums as integers; unknown fields are ignored.
pub fn decode_json(body: &[u8]) -> Result<ExportTraceServiceRequest, String> {
    serde_json::from_slice(body)
        .map_err(|e| format!("the body is not a valid OTLP JSON ExportTraceServiceRequest: {e}"))
}

pub fn decode_logs_protobuf(body: &[u8]) -> Result<ExportLogsServiceRequest, String> {
    ExportLogsServiceRequest::decode(body)
        .map_err(|e| format!("the body is not a valid OTLP protobuf ExportLogsServiceRequest: {e}"))
}

pub fn decode_logs_json(body: &[u8]) -> Result<ExportLogsServiceRequest, String> {
    serde_json::from_slice(body)
        .map_err(|e| format!("the body is not a valid OTLP JSON ExportLogsServiceRequest: {e}"))
}

/// Spans refused from one request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rejections {
    pub count: i64,
    /// The first few reasons, for the client's `partial_success.error_message`.
    pub message: String,
}

const MAX_REASONS: usize = 3;

/// Remove every span with an invalid trace id, span id or parent span id, keeping the valid
/// spans of the same request. Empty scope and resource groups left behind are removed too.
/// Remove every log record with an invalid trace id or span id (both may be absent: a record
/// of no trace, or of a trace but no span). Empty groups left behind are removed too.
pub fn keep_valid_logs(resource_logs: &mut Vec<ResourceLogs>) -> Rejections {
    let mut rej = Rejections::default();
    let mut reasons = Vec::new();
    for rl in resource_logs.iter_mut() {
        for sl in rl.scope_logs.iter_mut() {
            // Some SDKs send zeros for "no trace": the same as no id.
            for rec in sl.log_records.iter_mut() {
                for id in [&mut rec.trace_id, &mut rec.span_id] {
                    if !id.is_empty() && id.iter().all(|&b| b == 0) {
                        id.clear();
                    }
                }
            }
            sl.log_records.retain(|rec| {
                let problem = id_problem(&rec.trace_id, 16, false)
                    .map(|p| ("trace_id", p))
                    .or_else(|| id_problem(&rec.span_id, 8, false).map(|p| ("span_id", p)));
                match problem {
                    None => true,
                    Some((field, why)) => {
                        rej.count += 1;
                        if reasons.len() < MAX_REASONS {
                            reasons.push(format!("log record {:?}: {field} {why}", rec.event_name));
                        }
                        false
                    }
                }
            });
        }
        rl.scope_logs.retain(|sl| !sl.log_records.is_empty());
    }
    resource_logs.retain(|rl| !rl.scope_logs.is_empty());
    if rej.count > 0 {
        rej.message = format!(
            "{} log record(s) rejected for invalid ids (trace_id must be 16 bytes, span_id 8, or absent): {}",
            rej.count,
            reasons.join("; ")
        );
    }
    rej
}

pub fn keep_valid_spans(resource_spans: &mut Vec<ResourceSpans>) -> Rejections {
    let mut rej = Rejections::default();
    let mut reasons = Vec::new();
    for rs in resource_spans.iter_mut() {
        for ss in rs.scope_spans.iter_mut() {
            ss.spans.retain(|span| {
                let problem = id_problem(&span.trace_id, 16, true)
                    .map(|p| ("trace_id", p))
                    .or_else(|| id_problem(&span.span_id, 8, true).map(|p| ("span_id", p)))
                    .or_else(|| {
                        id_problem(&span.parent_span_id, 8, false).map(|p| ("parent_span_id", p))
                    });
                match problem {
                    None => true,
                    Some((field, why)) => {
                        rej.count += 1;
                        if reasons.len() < MAX_REASONS {
                            let who = if span.span_id.len() == 8 {
                                format!("span {:?} ({})", span.name, to_hex(&span.span_id))
                            } else {
                                format!("span {:?}", span.name)
                            };
                            reasons.push(format!("{who}: {field} {why}"));
                        }
                        false
                    }
                }
            });
        }
        rs.scope_spans.retain(|ss| !ss.spans.is_empty());
    }
    resource_spans.retain(|rs| !rs.scope_spans.is_empty());
    if rej.count > 0 {
        let more = rej.count as usize - reasons.len();
        rej.message = format!(
            "{} span(s) rejected for invalid ids (trace_id must be 16 bytes, span_id 8, neither all zeros): {}{}",
            rej.count,
            reasons.join("; "),
            if more > 0 {
                format!("; and {more} more")
            } else {
                String::new()
            }
        );
    }
    rej
}

/// Why a gzip body could not be decompressed.
pub(crate) enum GunzipError {
    TooLarge,
    Invalid(std::io::Error),
}

/// Decompress a gzip body (OTLP/HTTP `Content-Encoding: gzip`, an OTLP/gRPC message with
/// `grpc-encoding: gzip`), refusing to inflate past `max` bytes (a small bomb must not take the
/// memory).
pub(crate) fn gunzip(data: &[u8], max: usize) -> Result<bytes::Bytes, GunzipError> {
    use std::io::Read;
    let mut out = Vec::with_capacity(data.len().saturating_mul(4).min(max));
    let mut dec = flate2::read::MultiGzDecoder::new(data).take(max as u64 + 1);
    dec.read_to_end(&mut out).map_err(GunzipError::Invalid)?;
    if out.len() > max {
        return Err(GunzipError::TooLarge);
    }
    Ok(bytes::Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::trace::v1::Span;

    #[test]
    fn gunzip_refuses_to_inflate_past_the_limit() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![0u8; 1 << 20]).expect("compress");
        let small = enc.finish().expect("compress");
        assert!(matches!(
            gunzip(&small, 1 << 16),
            Err(GunzipError::TooLarge)
        ));
        assert_eq!(gunzip(&small, 1 << 20).map(|b| b.len()).ok(), Some(1 << 20));
        assert!(matches!(
            gunzip(b"not gzip", 100),
            Err(GunzipError::Invalid(_))
        ));
    }

    #[test]
    fn json_follows_the_otlp_rules() {
        let body = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"shop"}}]},
          "scopeSpans":[{"scope":{"name":"s"},"spans":[{
            "traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"eee19b7ec3c1b174",
            "name":"GET /","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":1700000000500000000,
            "attributes":[{"key":"n","value":{"intValue":"42"}},{"key":"m","value":{"intValue":7}}],
            "somethingNew":{"x":1},
            "status":{"code":2,"message":"boom"}}]}]}]}"#;
        let req = decode_json(body).expect("valid OTLP JSON");
        let span = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(to_hex(&span.trace_id), "5b8efff798038103d269b633813fc60c");
        assert_eq!(span.kind, 2);
        assert_eq!(span.start_time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(span.end_time_unix_nano, 1_700_000_000_500_000_000);
        let ints: Vec<_> = span
            .attributes
            .iter()
            .map(|kv| kv.value.as_ref().and_then(|v| v.value.clone()))
            .collect();
        assert_eq!(
            ints,
            vec![Some(Value::IntValue(42)), Some(Value::IntValue(7))]
        );
        assert_eq!(span.status.as_ref().map(|s| s.code), Some(2));
    }

    #[test]
    fn bad_json_says_where() {
        let err = decode_json(b"{\"resourceSpans\": [").expect_err("truncated");
        assert!(
            err.contains("not a valid OTLP JSON") && err.contains("line 1"),
            "{err}"
        );
        let err =
            decode_json(br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}"#)
                .expect_err("bad hex");
        assert!(err.contains("not a valid OTLP JSON"), "{err}");
    }

    fn span(name: &str, trace: Vec<u8>, id: Vec<u8>, parent: Vec<u8>) -> Span {
        Span {
            name: name.into(),
            trace_id: trace,
            span_id: id,
            parent_span_id: parent,
            ..Default::default()
        }
    }

    #[test]
    fn invalid_ids_are_refused_one_by_one() {
        use opentelemetry_proto::tonic::trace::v1::ScopeSpans;
        let mut rs = vec![
            ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![
                        span("ok", vec![1; 16], vec![2; 8], vec![]),
                        span("short", vec![1; 15], vec![3; 8], vec![]),
                        span("zero", vec![1; 16], vec![0; 8], vec![]),
                        span("child", vec![1; 16], vec![4; 8], vec![2; 8]),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            },
            ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span("badparent", vec![1; 16], vec![5; 8], vec![9; 3])],
                    ..Default::default()
                }],
                ..Default::default()
            },
        ];
        let rej = keep_valid_spans(&mut rs);
        assert_eq!(rej.count, 3);
        assert_eq!(
            rej.message,
            "3 span(s) rejected for invalid ids (trace_id must be 16 bytes, span_id 8, neither all zeros): span \"short\" (0303030303030303): trace_id has 15 bytes; it must have 16; span \"zero\" (0000000000000000): span_id is all zeros; span \"badparent\" (0505050505050505): parent_span_id has 3 bytes; it must have 8"
        );
        assert_eq!(rs.len(), 1, "the emptied resource group is dropped");
        let names: Vec<_> = rs[0].scope_spans[0]
            .spans
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, vec!["ok", "child"]);
    }

    mod fuzz {
        //! Bounded fuzzing of what arrives from the network: any bytes, and valid requests with
        //! bytes flipped, cut or inserted. Decoding and the id checks must never panic.
        use super::*;
        use proptest::prelude::*;

        fn valid_protobuf() -> Vec<u8> {
            let json = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"shop"}}]},
              "scopeSpans":[{"scope":{"name":"s"},"spans":[{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174",
              "parentSpanId":"EEE19B7EC3C1B173","name":"checkout","kind":2,"startTimeUnixNano":"1544712660000000000",
              "endTimeUnixNano":"1544712661000000000","attributes":[{"key":"n","value":{"intValue":"42"}},
              {"key":"a","value":{"arrayValue":{"values":[{"doubleValue":1.5},{"kvlistValue":{"values":[{"key":"k","value":{"bytesValue":"AAE="}}]}}]}}}],
              "events":[{"name":"e","timeUnixNano":"1544712660500000000"}],"links":[{"traceId":"5B8EFFF798038103D269B633813FC60D","spanId":"EEE19B7EC3C1B175"}],
              "status":{"code":2,"message":"boom"}}]}]}]}"#;
            decode_json(json).expect("valid").encode_to_vec()
        }

        fn mutate(mut data: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
            for &(at, op, byte) in edits {
                if data.is_empty() {
                    data.push(byte);
                    continue;
                }
                let at = at % data.len();
                match op % 3 {
                    0 => data[at] ^= byte.max(1),
                    1 => {
                        data.remove(at);
                    }
                    _ => data.insert(at, byte),
                }
            }
            data
        }

        fn count(groups: &[ResourceSpans]) -> usize {
            groups
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum()
        }

        /// What prost accepts, the span block reader accepts, keeping and refusing the same
        /// spans; what prost refuses is refused with a message, never a panic.
        fn check_protobuf(data: &[u8]) {
            let ours = spans_of_protobuf(data);
            match decode_protobuf(data) {
                Ok(mut req) => {
                    let total = count(&req.resource_spans);
                    let rej = keep_valid_spans(&mut req.resource_spans);
                    let kept = count(&req.resource_spans);
                    assert_eq!(kept as i64 + rej.count, total as i64);
                    let (block, ours_rej) = ours.expect("prost accepts it");
                    assert_eq!(block.len(), kept);
                    assert_eq!(ours_rej, rej);
                    // What a block keeps of prost's structs (no profiles-only fields), compared
                    // encoded: a damaged double can be NaN, which no struct equals.
                    let encoded = |groups: Vec<ResourceSpans>| {
                        ExportTraceServiceRequest {
                            resource_spans: groups,
                        }
                        .encode_to_vec()
                    };
                    let expected = SpanBlock::from_prost(&req.resource_spans).to_prost();
                    assert_eq!(encoded(block.to_prost()), encoded(expected));
                }
                Err(_) => {
                    if let Err(e) = ours {
                        assert!(
                            e.starts_with("the body is not a valid OTLP protobuf"),
                            "{e}"
                        );
                    }
                }
            }
        }

        fn check(decoded: Result<ExportTraceServiceRequest, String>) {
            if let Ok(mut req) = decoded {
                let total = count(&req.resource_spans);
                let rej = keep_valid_spans(&mut req.resource_spans);
                let kept = count(&req.resource_spans);
                assert_eq!(kept as i64 + rej.count, total as i64);
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3000))]
            #[test]
            fn any_bytes_as_protobuf(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
                check_protobuf(&data);
            }

            #[test]
            fn damaged_protobuf(edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8)) {
                check_protobuf(&mutate(valid_protobuf(), &edits));
            }

            #[test]
            fn any_bytes_as_json(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
                check(decode_json(&data));
            }

            #[test]
            fn damaged_json(edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0x20u8..0x7f), 1..8)) {
                let req = decode_protobuf(&valid_protobuf()).expect("valid");
                let json = serde_json::to_vec(&req).expect("json");
                check(decode_json(&mutate(json, &edits)));
            }
        }
    }
}
