//! Where each key and list item of a YAML document stands, so problems found after parsing
//! can still name their line.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

#[derive(Debug, Default)]
pub(crate) struct LineIndex {
    lines: HashMap<Vec<String>, usize>,
}

impl LineIndex {
    pub(crate) fn build(text: &str) -> Result<LineIndex, (usize, String)> {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        parser
            .load(&mut builder, false)
            .map_err(|e| (e.marker().line(), e.info().to_string()))?;
        Ok(LineIndex {
            lines: builder.lines,
        })
    }

    /// The line of `path`, or of its nearest ancestor that has one.
    pub(crate) fn line_of(&self, path: &[String]) -> usize {
        let mut p = path.to_vec();
        loop {
            if let Some(l) = self.lines.get(&p) {
                return *l;
            }
            if p.pop().is_none() {
                return 1;
            }
        }
    }
}

enum Frame {
    Map {
        path: Vec<String>,
        key: Option<String>,
    },
    Seq {
        path: Vec<String>,
        index: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    lines: HashMap<Vec<String>, usize>,
}

impl Builder {
    /// The path a value arriving now takes, recording its line; `None` if it is a map key.
    fn value_path(&mut self, ev: &Event, line: usize) -> Option<Vec<String>> {
        match self.stack.last_mut() {
            None => Some(Vec::new()),
            Some(Frame::Map { path, key }) => match key.take() {
                None => {
                    if let Event::Scalar(k, ..) = ev {
                        let mut p = path.clone();
                        p.push(k.clone());
                        self.lines.insert(p, line);
                        *key = Some(k.clone());
                    } else {
                        *key = Some(String::from("?"));
                    }
                    None
                }
                Some(k) => {
                    let mut p = path.clone();
                    p.push(k);
                    Some(p)
                }
            },
            Some(Frame::Seq { path, index }) => {
                let mut p = path.clone();
                p.push(index.to_string());
                *index += 1;
                self.lines.insert(p.clone(), line);
                Some(p)
            }
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        match ev {
            Event::MappingStart(..) => {
                if let Some(path) = self.value_path(&ev, line) {
                    self.stack.push(Frame::Map { path, key: None });
                }
            }
            Event::SequenceStart(..) => {
                if let Some(path) = self.value_path(&ev, line) {
                    self.stack.push(Frame::Seq { path, index: 0 });
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::Scalar(..) | Event::Alias(..) => {
                self.value_path(&ev, line);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn finds_keys_and_items() {
        let text = "a:\n  b: 1\n  c:\n    - x\n    - y: 2\n      z: 3\nd: {e: 1}\n";
        let idx = LineIndex::build(text).expect("parses");
        assert_eq!(idx.line_of(&p(&["a"])), 1);
        assert_eq!(idx.line_of(&p(&["a", "b"])), 2);
        assert_eq!(idx.line_of(&p(&["a", "c", "0"])), 4);
        assert_eq!(idx.line_of(&p(&["a", "c", "1", "z"])), 6);
        assert_eq!(idx.line_of(&p(&["d", "e"])), 7);
        assert_eq!(idx.line_of(&p(&["a", "b", "nope"])), 2);
    }
}
