//! Spans waiting for their batch, and the cutting of batches at a span count.

use std::collections::VecDeque;

use spanlake_core::{Batch, Guard, SpanBlock};

/// Spans waiting for a batch, oldest first, in the blocks they arrived in.
#[derive(Default)]
pub struct Pending {
    blocks: VecDeque<SpanBlock>,
    count: usize,
    guards: Vec<Guard>,
}

impl Pending {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn push(&mut self, batch: Batch) {
        self.count += batch.len();
        let (blocks, guards) = batch.into_parts();
        self.blocks
            .extend(blocks.into_iter().filter(|b| !b.is_empty()));
        self.guards.extend(guards);
    }

    /// Take the oldest `n` spans (or all, if fewer) as a batch. A block cut in two gives its
    /// first spans (with their resource and scope) to a new block. The guards of what remains
    /// go with every batch that holds some of it, so none is released before all its spans are
    /// exported.
    pub fn take(&mut self, n: usize) -> Batch {
        let mut out = Vec::new();
        let mut need = n.min(self.count);
        self.count -= need;
        while need > 0 {
            let Some(front) = self.blocks.front_mut() else {
                break;
            };
            if front.len() <= need {
                need -= front.len();
                out.push(self.blocks.pop_front().expect("front exists"));
                continue;
            }
            out.push(front.take_front(need));
            need = 0;
        }
        let guards = if self.count == 0 {
            std::mem::take(&mut self.guards)
        } else {
            self.guards.clone()
        };
        Batch::from_parts(out, guards)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use proptest::prelude::*;
    use spanlake_core::Signal;

    /// Build a batch from group shapes: resources of scopes of span counts. Span names number
    /// the spans in order; scope names carry their resource and scope index.
    fn build(shape: &[Vec<usize>], next: &mut usize) -> Batch {
        let mut groups = Vec::new();
        for (r, scopes) in shape.iter().enumerate() {
            let mut rs = ResourceSpans {
                resource: Some(Resource::default()),
                ..Default::default()
            };
            for (s, &n) in scopes.iter().enumerate() {
                let spans = (0..n)
                    .map(|_| {
                        *next += 1;
                        Span {
                            name: (*next - 1).to_string(),
                            ..Default::default()
                        }
                    })
                    .collect();
                rs.scope_spans.push(ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: format!("{r}.{s}"),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                });
            }
            groups.push(rs);
        }
        Batch::spans(groups)
    }

    /// (scope name, span name) for every span, in order.
    fn flat(b: &Batch) -> Vec<(String, usize)> {
        let Signal::Spans(blocks) = &b.signal else {
            panic!("spans expected")
        };
        blocks
            .iter()
            .flat_map(|b| b.to_prost())
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| {
                s.spans.into_iter().map(move |sp| {
                    (
                        s.scope.as_ref().map(|x| x.name.clone()).unwrap_or_default(),
                        sp.name.parse().expect("num"),
                    )
                })
            })
            .collect()
    }

    proptest! {
        #[test]
        fn cutting_keeps_every_span_in_order_with_its_scope(
            batches in prop::collection::vec(prop::collection::vec(prop::collection::vec(0usize..7, 0..4), 0..4), 1..5),
            max in 1usize..12,
        ) {
            let mut pending = Pending::default();
            let mut next = 0;
            let mut expected = Vec::new();
            for shape in &batches {
                let b = build(shape, &mut next);
                expected.extend(flat(&b));
                pending.push(b);
            }
            let mut got = Vec::new();
            while !pending.is_empty() {
                let before = pending.len();
                let chunk = pending.take(max);
                prop_assert!(chunk.len() <= max);
                prop_assert!(chunk.len() == max.min(before));
                prop_assert_eq!(pending.len(), before - chunk.len());
                let Signal::Spans(blocks) = &chunk.signal else { panic!("spans expected") };
                for r in blocks.iter().flat_map(|b| b.to_prost()) {
                    prop_assert!(r.resource.is_some(), "a cut group keeps its resource");
                    for s in &r.scope_spans {
                        prop_assert!(!s.spans.is_empty(), "no empty scope in a batch");
                    }
                }
                got.extend(flat(&chunk));
            }
            prop_assert_eq!(got, expected);
        }
    }
}
