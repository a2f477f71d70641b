//! OTLP attribute values as text, with a type tag for every value that is not a string.
//!
//! In the lake an attribute map is `map<string, string>` — `attributes['http.route']` works in
//! every SQL engine — and a second map, `*_types`, names the type of each non-string value
//! (`int`, `double`, `bool`, `bytes`, `array`, `kvlist`, `empty`) so the original value can be
//! rebuilt exactly: [`text_of`] and [`value_of`] are inverses.

use base64::Engine as _;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList};
use serde_json::Value as Json;

/// The text of a value and its type tag (`None` for strings).
pub fn text_of(value: Option<&Value>, out: &mut String) -> Option<&'static str> {
    use std::fmt::Write;
    out.clear();
    match value {
        Some(Value::StringValue(s)) => {
            out.push_str(s);
            None
        }
        Some(Value::BoolValue(b)) => {
            out.push_str(if *b { "true" } else { "false" });
            Some("bool")
        }
        Some(Value::IntValue(i)) => {
            // As `Display` writes them, without its formatting machinery (~0.5% of the
            // collector's CPU at full load).
            out.push_str(itoa::Buffer::new().format(*i));
            Some("int")
        }
        Some(Value::DoubleValue(d)) => {
            let _ = write!(out, "{d}");
            Some("double")
        }
        Some(Value::BytesValue(b)) => {
            base64::engine::general_purpose::STANDARD.encode_string(b, out);
            Some("bytes")
        }
        Some(Value::ArrayValue(a)) => {
            out.push_str(
                &Json::Array(a.values.iter().map(|v| json_of(v.value.as_ref())).collect())
                    .to_string(),
            );
            Some("array")
        }
        Some(Value::KvlistValue(kv)) => {
            out.push_str(&Json::Object(kvlist_json(kv)).to_string());
            Some("kvlist")
        }
        // A string-table index only used by profiles; kept as the number it is.
        Some(Value::StringValueStrindex(i)) => {
            let _ = write!(out, "{i}");
            Some("strindex")
        }
        None => Some("empty"),
    }
}

fn kvlist_json(kv: &KeyValueList) -> serde_json::Map<String, Json> {
    kv.values
        .iter()
        .map(|e| {
            (
                e.key.clone(),
                json_of(e.value.as_ref().and_then(|v| v.value.as_ref())),
            )
        })
        .collect()
}

/// Plain JSON of a value nested in an array or key-value list: strings, integers, doubles
/// (always with a decimal point or exponent, so they stay doubles), booleans, bytes as base64,
/// arrays, objects, and null for an empty value.
pub fn json_of(value: Option<&Value>) -> Json {
    match value {
        Some(Value::StringValue(s)) => Json::String(s.clone()),
        Some(Value::BoolValue(b)) => Json::Bool(*b),
        Some(Value::IntValue(i)) => Json::from(*i),
        Some(Value::DoubleValue(d)) => serde_json::Number::from_f64(*d)
            .map(Json::Number)
            .unwrap_or(Json::Null),
        Some(Value::BytesValue(b)) => {
            Json::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        Some(Value::ArrayValue(a)) => {
            Json::Array(a.values.iter().map(|v| json_of(v.value.as_ref())).collect())
        }
        Some(Value::KvlistValue(kv)) => Json::Object(kvlist_json(kv)),
        Some(Value::StringValueStrindex(i)) => Json::from(*i),
        None => Json::Null,
    }
}

fn value_of_json(j: &Json) -> Option<Value> {
    Some(match j {
        Json::Null => return None,
        Json::Bool(b) => Value::BoolValue(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) if !n.to_string().contains(['.', 'e', 'E']) => Value::IntValue(i),
            _ => Value::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::StringValue(s.clone()),
        Json::Array(a) => Value::ArrayValue(ArrayValue {
            values: a
                .iter()
                .map(|v| AnyValue {
                    value: value_of_json(v),
                })
                .collect(),
        }),
        Json::Object(o) => Value::KvlistValue(KeyValueList {
            values: o
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.clone(),
                    value: Some(AnyValue {
                        value: value_of_json(v),
                    }),
                    ..Default::default()
                })
                .collect(),
        }),
    })
}

/// Rebuild a value from its text and type tag. `None` if the text does not fit the tag.
pub fn value_of(text: &str, tag: Option<&str>) -> Option<Option<Value>> {
    Some(match tag {
        None | Some("string") => Some(Value::StringValue(text.to_string())),
        Some("bool") => Some(Value::BoolValue(text.parse().ok()?)),
        Some("int") => Some(Value::IntValue(text.parse().ok()?)),
        Some("double") => Some(Value::DoubleValue(text.parse().ok()?)),
        Some("bytes") => Some(Value::BytesValue(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .ok()?,
        )),
        Some("array" | "kvlist") => value_of_json(&serde_json::from_str(text).ok()?),
        Some("strindex") => Some(Value::StringValueStrindex(text.parse().ok()?)),
        Some("empty") => None,
        Some(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaf() -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            ".*".prop_map(|s| Some(Value::StringValue(s))),
            any::<bool>().prop_map(|b| Some(Value::BoolValue(b))),
            any::<i64>().prop_map(|i| Some(Value::IntValue(i))),
            any::<f64>()
                .prop_filter("finite", |d| d.is_finite())
                .prop_map(|d| Some(Value::DoubleValue(d))),
            prop::collection::vec(any::<u8>(), 0..20).prop_map(|b| Some(Value::BytesValue(b))),
            Just(None),
        ]
    }

    fn nested() -> impl Strategy<Value = Option<Value>> {
        // Inside arrays and lists: everything but bytes (they come back as base64 strings).
        let inner = prop_oneof![
            ".*".prop_map(|s| Some(Value::StringValue(s))),
            any::<i64>().prop_map(|i| Some(Value::IntValue(i))),
            any::<f64>()
                .prop_filter("finite", |d| d.is_finite())
                .prop_map(|d| Some(Value::DoubleValue(d))),
            any::<bool>().prop_map(|b| Some(Value::BoolValue(b))),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(|v| Some(Value::ArrayValue(
                ArrayValue {
                    values: v.into_iter().map(|value| AnyValue { value }).collect()
                }
            ))),
            prop::collection::btree_map("[a-z.]{1,8}", inner, 0..5).prop_map(|m| Some(
                Value::KvlistValue(KeyValueList {
                    values: m
                        .into_iter()
                        .map(|(key, value)| KeyValue {
                            key,
                            value: Some(AnyValue { value }),
                            ..Default::default()
                        })
                        .collect()
                })
            )),
        ]
    }

    proptest! {
        #[test]
        fn every_value_comes_back_with_its_type(v in prop_oneof![leaf(), nested()]) {
            let mut text = String::new();
            let tag = text_of(v.as_ref(), &mut text);
            prop_assert_eq!(value_of(&text, tag), Some(v));
        }
    }

    #[test]
    fn texts_are_what_sql_users_expect() {
        let mut s = String::new();
        assert_eq!(text_of(Some(&Value::IntValue(-42)), &mut s), Some("int"));
        assert_eq!(s, "-42");
        assert_eq!(
            text_of(Some(&Value::DoubleValue(0.25)), &mut s),
            Some("double")
        );
        assert_eq!(s, "0.25");
        assert_eq!(
            text_of(Some(&Value::StringValue("GET".into())), &mut s),
            None
        );
        assert_eq!(s, "GET");
        let arr = Value::ArrayValue(ArrayValue {
            values: vec![
                AnyValue {
                    value: Some(Value::StringValue("a".into())),
                },
                AnyValue {
                    value: Some(Value::IntValue(1)),
                },
                AnyValue {
                    value: Some(Value::DoubleValue(1.0)),
                },
            ],
        });
        assert_eq!(text_of(Some(&arr), &mut s), Some("array"));
        assert_eq!(s, r#"["a",1,1.0]"#);
    }
}
