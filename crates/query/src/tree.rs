//! Trace trees: children under their parents, ordered by start time.
//!
//! A span whose parent is not in the trace is kept at the top and flagged; a cycle of parent
//! ids never hangs (each span is placed once; the spans of a cycle are lifted to the top and
//! flagged too).

use std::collections::HashMap;

use crate::rows::StoredSpan;

/// A span placed in its trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Index into the trace's spans.
    pub index: usize,
    pub depth: usize,
    /// The span names a parent that is not in the trace (or is part of a parent cycle).
    pub orphan: bool,
}

/// Spans of one trace (deduplicated) in depth-first order: each parent before its children,
/// siblings by start time.
pub fn tree_order(spans: &[StoredSpan]) -> Vec<Node> {
    let by_id: HashMap<&str, usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id.as_str(), i))
        .collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); spans.len()];
    let mut tops: Vec<(usize, bool)> = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        match s.parent_span_id.as_deref().and_then(|p| by_id.get(p)) {
            Some(&p) if p != i => children[p].push(i),
            Some(_) => tops.push((i, true)), // its own parent
            None => tops.push((i, s.parent_span_id.is_some())),
        }
    }
    let start = |i: &usize| {
        (
            spans[*i].span.start_time_unix_nano,
            spans[*i].span_id.clone(),
        )
    };
    for c in children.iter_mut() {
        c.sort_by_key(start);
    }
    tops.sort_by_key(|(i, _)| start(i));

    let mut placed = vec![false; spans.len()];
    let mut out = Vec::with_capacity(spans.len());
    let walk = |top: usize, orphan: bool, placed: &mut Vec<bool>, out: &mut Vec<Node>| {
        let mut stack = vec![(top, 0usize, orphan)];
        while let Some((i, depth, orphan)) = stack.pop() {
            if placed[i] {
                continue;
            }
            placed[i] = true;
            out.push(Node {
                index: i,
                depth,
                orphan,
            });
            for &c in children[i].iter().rev() {
                stack.push((c, depth + 1, false));
            }
        }
    };
    for (i, orphan) in tops {
        walk(i, orphan, &mut placed, &mut out);
    }
    // Whatever is left hangs off a cycle: lift the earliest of each and go on.
    let mut rest: Vec<usize> = (0..spans.len()).filter(|i| !placed[*i]).collect();
    rest.sort_by_key(start);
    for i in rest {
        walk(i, true, &mut placed, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, parent: Option<&str>, start: u64) -> StoredSpan {
        StoredSpan {
            trace_id: "t".into(),
            span_id: id.into(),
            parent_span_id: parent.map(str::to_string),
            service_name: None,
            span: opentelemetry_proto::tonic::trace::v1::Span {
                start_time_unix_nano: start,
                ..Default::default()
            },
            resource: Default::default(),
            resource_schema_url: String::new(),
            scope: Default::default(),
            scope_schema_url: String::new(),
            ingest_time_unix_nano: 0,
        }
    }

    fn shape(spans: &[StoredSpan]) -> Vec<(String, usize, bool)> {
        tree_order(spans)
            .into_iter()
            .map(|n| (spans[n.index].span_id.clone(), n.depth, n.orphan))
            .collect()
    }

    #[test]
    fn children_under_parents_by_start_time() {
        let spans = vec![
            span("c2", Some("root"), 30),
            span("root", None, 0),
            span("g1", Some("c1"), 15),
            span("c1", Some("root"), 10),
            span("lost", Some("missing"), 5),
        ];
        assert_eq!(
            shape(&spans),
            vec![
                ("root".into(), 0, false),
                ("c1".into(), 1, false),
                ("g1".into(), 2, false),
                ("c2".into(), 1, false),
                ("lost".into(), 0, true),
            ]
        );
    }

    #[test]
    fn cycles_never_hang() {
        let spans = vec![
            span("a", Some("b"), 1),
            span("b", Some("a"), 2),
            span("self", Some("self"), 3),
        ];
        let got = shape(&spans);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], ("self".into(), 0, true));
        assert_eq!(got[1], ("a".into(), 0, true));
        assert_eq!(got[2], ("b".into(), 1, false));
    }
}
