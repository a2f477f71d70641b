//! `${env:VAR}` and `${env:VAR:-default}` substitution, applied to the text before parsing so
//! that every problem keeps its line.

/// Substitute environment references in `text`. `$$` stands for a literal `$`.
/// Returns the new text, or the `(line, message)` of every reference that could not be resolved.
pub fn substitute(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<(usize, String)>> {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let line_no = i + 1;
        let mut rest = line;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let tail = &rest[pos..];
            if let Some(after) = tail.strip_prefix("$$") {
                out.push('$');
                rest = after;
            } else if let Some(body) = tail.strip_prefix("${") {
                let Some(end) = body.find('}') else {
                    problems.push((
                        line_no,
                        "unclosed \"${\": write ${env:VAR} or $$ for a literal $".into(),
                    ));
                    out.push_str(tail);
                    rest = "";
                    continue;
                };
                let reference = &body[..end];
                rest = &body[end + 1..];
                let Some(spec) = reference.strip_prefix("env:") else {
                    problems.push((
                        line_no,
                        format!("\"${{{reference}}}\": only ${{env:VAR}} references are supported"),
                    ));
                    continue;
                };
                let (name, default) = match spec.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (spec, None),
                };
                if name.is_empty()
                    || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    || name.starts_with(|c: char| c.is_ascii_digit())
                {
                    problems.push((
                        line_no,
                        format!("\"${{{reference}}}\": {name:?} is not a valid variable name"),
                    ));
                    continue;
                }
                match (lookup(name), default) {
                    (Some(v), _) => out.push_str(&v),
                    (None, Some(d)) => out.push_str(d),
                    (None, None) => problems.push((
                        line_no,
                        format!(
                            "environment variable {name} is not set; set it or give a default: ${{env:{name}:-value}}"
                        ),
                    )),
                }
            } else {
                out.push('$');
                rest = &tail[1..];
            }
        }
        out.push_str(rest);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("10.0.0.1".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_values_and_defaults() {
        let text =
            "a: ${env:HOST}:4317\nb: ${env:PORT:-4318}\nc: x$$y\nd: ${env:EMPTY:-z}\ne: $5\n";
        assert_eq!(
            substitute(text, &env).expect("resolves"),
            "a: 10.0.0.1:4317\nb: 4318\nc: x$y\nd: \ne: $5\n"
        );
    }

    #[test]
    fn reports_every_unresolved_reference_with_its_line() {
        let text = "a: 1\nb: ${env:NOPE}\nc: ${HOME}\nd: ${env:1X}\ne: ${env:OPEN\n";
        let problems = substitute(text, &env).expect_err("unresolved");
        assert_eq!(
            problems,
            vec![
                (2, "environment variable NOPE is not set; set it or give a default: ${env:NOPE:-value}".into()),
                (3, "\"${HOME}\": only ${env:VAR} references are supported".into()),
                (4, "\"${env:1X}\": \"1X\" is not a valid variable name".into()),
                (5, "unclosed \"${\": write ${env:VAR} or $$ for a literal $".into()),
            ]
        );
    }
}
