//! A parsed pipeline file that remembers where everything is.

use std::fmt;

use serde::de::DeserializeOwned;
use serde_yaml::Value;

use crate::env::substitute;
use crate::lines::LineIndex;

/// A path into the document: map keys and list indices.
pub type Path = Vec<String>;

/// One problem, on one line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub message: String,
}

/// Every problem found in one file, printed as `FILE:LINE: message` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems {
    pub file: String,
    pub list: Vec<Problem>,
}

impl Problems {
    pub fn new(file: &str, mut list: Vec<Problem>) -> Self {
        list.sort_by_key(|p| p.line);
        list.dedup();
        Problems {
            file: file.to_string(),
            list,
        }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.list.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}: {}", self.file, p.line, p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// A pipeline file after `${env:…}` substitution, parsed, with the line of every key.
#[derive(Debug)]
pub struct Document {
    file: String,
    root: Value,
    lines: LineIndex,
}

impl Document {
    /// Parse `text` (named `file` in problems), substituting environment references through `env`.
    pub fn parse(
        file: &str,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Document, Problems> {
        let text = substitute(text, env).map_err(|list| {
            Problems::new(
                file,
                list.into_iter()
                    .map(|(line, message)| Problem { line, message })
                    .collect(),
            )
        })?;
        let one =
            |line: usize, message: String| Problems::new(file, vec![Problem { line, message }]);
        let lines = LineIndex::build(&text)
            .map_err(|(line, msg)| one(line, format!("not valid YAML: {msg}")))?;
        let root: Value = serde_yaml::from_str(&text).map_err(|e| {
            let line = e.location().map(|l| l.line()).unwrap_or(1);
            one(line, format!("not valid YAML: {e}"))
        })?;
        let root = match root {
            Value::Null => Value::Mapping(Default::default()),
            v @ Value::Mapping(_) => v,
            _ => {
                return Err(one(
                    1,
                    "a pipeline file must be a mapping (receivers:, exporters:, service:)".into(),
                ));
            }
        };
        Ok(Document {
            file: file.to_string(),
            root,
            lines,
        })
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    pub fn root(&self) -> &Value {
        &self.root
    }

    /// The value at `path`, if there is one.
    pub fn get(&self, path: &[String]) -> Option<&Value> {
        let mut v = &self.root;
        for part in path {
            v = match v {
                Value::Mapping(m) => m.get(part.as_str())?,
                Value::Sequence(s) => s.get(part.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(v)
    }

    pub fn line_of(&self, path: &[String]) -> usize {
        self.lines.line_of(path)
    }

    /// A problem located at `path`.
    pub fn problem(&self, path: &[String], message: impl Into<String>) -> Problem {
        Problem {
            line: self.line_of(path),
            message: message.into(),
        }
    }

    /// Decode the value at `path` into a config struct. An absent or empty value decodes as an
    /// empty mapping, so `otlp:` alone means "all defaults". A failure names the dotted path of
    /// the offending key and stands on its line.
    pub fn decode<T: DeserializeOwned>(&self, path: &[String]) -> Result<T, Problem> {
        let value = match self.get(path) {
            None | Some(Value::Null) => Value::Mapping(Default::default()),
            Some(v) => v.clone(),
        };
        serde_path_to_error::deserialize::<_, T>(value).map_err(|err| {
            let mut full: Path = path.to_vec();
            for seg in err.path().iter() {
                match seg {
                    serde_path_to_error::Segment::Map { key } => full.push(key.clone()),
                    serde_path_to_error::Segment::Seq { index } => full.push(index.to_string()),
                    _ => {}
                }
            }
            let message = err.inner().to_string();
            if let Some(field) = unknown_field(&message)
                && full.last().map(String::as_str) != Some(field)
            {
                full.push(field.to_string());
            }
            Problem {
                line: self.line_of(&full),
                message: format!("{}: {message}", dotted(&full)),
            }
        })
    }
}

/// `a.b[0].c` for a path.
pub fn dotted(path: &[String]) -> String {
    let mut s = String::new();
    for part in path {
        if part.parse::<usize>().is_ok() {
            s.push('[');
            s.push_str(part);
            s.push(']');
        } else {
            if !s.is_empty() {
                s.push('.');
            }
            s.push_str(part);
        }
    }
    s
}

fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(&rest[..rest.find('`')?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[serde(default)]
        size: u32,
        #[serde(default, with = "humantime_serde")]
        timeout: Option<std::time::Duration>,
    }

    fn p(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn decode_reports_unknown_keys_on_their_line() {
        let doc = Document::parse(
            "f.yaml",
            "x:\n  inner:\n    size: 3\n    sise: 4\n",
            &no_env,
        )
        .expect("parses");
        let err = doc
            .decode::<Inner>(&p(&["x", "inner"]))
            .expect_err("unknown key");
        assert_eq!(err.line, 4);
        assert!(
            err.message
                .starts_with("x.inner.sise: unknown field `sise`, expected"),
            "{}",
            err.message
        );
    }

    #[test]
    fn decode_reports_bad_values_on_their_line() {
        let doc =
            Document::parse("f.yaml", "x:\n  size: 3\n  timeout: soon\n", &no_env).expect("parses");
        let err = doc.decode::<Inner>(&p(&["x"])).expect_err("bad duration");
        assert_eq!(err.line, 3);
        assert!(err.message.starts_with("x.timeout: "), "{}", err.message);
    }

    #[test]
    fn empty_component_means_defaults() {
        let doc = Document::parse("f.yaml", "x:\n  inner:\n", &no_env).expect("parses");
        assert_eq!(
            doc.decode::<Inner>(&p(&["x", "inner"])).expect("defaults"),
            Inner {
                size: 0,
                timeout: None
            }
        );
    }

    #[test]
    fn yaml_syntax_errors_have_a_line() {
        let err =
            Document::parse("f.yaml", "a: 1\nb: [1, 2\nc: 3\n", &no_env).expect_err("bad yaml");
        assert_eq!(err.list.len(), 1);
        assert!(err.to_string().starts_with("f.yaml:"), "{err}");
        assert!(err.to_string().contains("not valid YAML"), "{err}");
    }
}
