//! Parsing what the Tempo and Jaeger APIs take: trace ids, Go durations, logfmt tags.

use std::time::Duration;

/// A trace id from a URL. Hex ids (up to 32 digits, any case) are lowercased and left-padded to
/// 32 digits, as Tempo does; other ids (the native API's free strings) are kept as they are.
pub fn trace_id(raw: &str) -> Result<String, String> {
    let id = raw.trim();
    if id.is_empty() {
        return Err("the trace id is empty".into());
    }
    if id.bytes().all(|b| b.is_ascii_hexdigit()) {
        if id.len() > 32 {
            return Err(format!("trace id {id:?} has more than 32 hex digits"));
        }
        return Ok(format!("{:0>32}", id.to_ascii_lowercase()));
    }
    if id.len() > 256 || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "{id:?} is not a trace id: use 32 hex digits, or the id given to RecordSpan"
        ));
    }
    Ok(id.to_string())
}

/// A Go duration: `300ms`, `1.5s`, `2m`, `1h30m`, `250us`, `10ns`.
pub fn go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (e.g. 100ms, 1.5s, 2m)");
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if n == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..n].parse().map_err(|_| bad())?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = &rest[u..];
    }
    Ok(Duration::from_nanos(total as u64))
}

/// Tempo's `tags`: logfmt, `key=value key2="a value"`.
pub fn logfmt(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = s.trim().chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        if chars.next() != Some('=') || key.is_empty() {
            return Err(format!(
                "tags {s:?}: expected key=value pairs separated by spaces"
            ));
        }
        let value = if chars.peek() == Some(&'"') {
            chars.next();
            let mut v = String::new();
            loop {
                match chars.next() {
                    Some('\\') => v.extend(chars.next()),
                    Some('"') => break,
                    Some(c) => v.push(c),
                    None => return Err(format!("tags {s:?}: unclosed quote")),
                }
            }
            v
        } else {
            std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace())).collect()
        };
        out.push((key, value));
    }
}

/// A string literal for SQL.
pub fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The SQL condition a tag stands for.
pub fn tag_condition(key: &str, value: &str) -> String {
    match key {
        "service.name" => format!("service_name = {}", sql_str(value)),
        "name" | "span.name" => format!("name = {}", sql_str(value)),
        "status" | "status.code" | "otel.status_code" => {
            format!(
                "status_code = {}",
                sql_str(
                    &value
                        .trim_start_matches("STATUS_CODE_")
                        .to_ascii_uppercase()
                )
            )
        }
        "kind" | "span.kind" => format!(
            "kind = {}",
            sql_str(&value.trim_start_matches("SPAN_KIND_").to_ascii_uppercase())
        ),
        "error" if value == "true" => "status_code = 'ERROR'".into(),
        _ => {
            let k = sql_str(key);
            let v = sql_str(value);
            format!("(attributes[{k}] = {v} OR resource_attributes[{k}] = {v})")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids() {
        assert_eq!(
            trace_id("ABC").as_deref(),
            Ok("00000000000000000000000000000abc")
        );
        assert_eq!(trace_id("eval-run-042").as_deref(), Ok("eval-run-042"));
        assert!(trace_id("").is_err());
        assert!(trace_id(&"a".repeat(33)).is_err());
        assert!(trace_id("has space").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(go_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(go_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(go_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(go_duration("soon").is_err());
        assert!(go_duration("5").is_err());
    }

    #[test]
    fn tags() {
        assert_eq!(
            logfmt(r#"service.name=shop http.route="/cart items""#),
            Ok(vec![
                ("service.name".into(), "shop".into()),
                ("http.route".into(), "/cart items".into())
            ])
        );
        assert!(logfmt("novalue").is_err());
        assert_eq!(
            tag_condition("x'y", "1"),
            "(attributes['x''y'] = '1' OR resource_attributes['x''y'] = '1')"
        );
    }
}
