//! The redaction processor: no secret reaches a log, an exporter, a file or a query.
//!
//! It covers every string a span carries: resource, scope, span, event and link attributes
//! (nested arrays and key-value lists included), span names, status messages, event names, and
//! JSON documents held in string attributes (the input/output payloads of LLM tracing SDKs),
//! whose keys and strings are checked like attributes. A key-matched secret loses its whole
//! value; a value-matched secret loses the matched text. Redaction runs in the pipeline before
//! batching, so whatever comes after (exporters, the lake, queries) only sees redacted spans.

mod config;
pub mod rules;

pub use config::{Action, RedactionConfig, Summary};

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};

use hmac::{Hmac, Mac};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use prost::Message;
use regex::Regex;
use regex_automata::Input;
use regex_automata::meta::{Cache as MetaCache, Regex as MetaRegex};
use serde_json::Value as Json;
use sha2::Sha256;
use spanlake_core::spans::{
    Attr, Rows, Status as BlockStatus, Str, Value as BlockValue, same_bytes, text_slot,
};
use spanlake_core::{CancellationToken, Fanout, Processor, Receiver, Signal, SpanBlock};
use tokio::task::JoinHandle;

pub const MASK: &str = "****";

/// Compiled rules.
pub struct Redactor {
    allow_all_keys: bool,
    allowed_keys: HashSet<String>,
    blocked_values: Vec<Regex>,
    /// The user's value patterns at once (`user_values`: there are some): one scan tells
    /// whether a string needs the individual patterns at all, and most strings do not. The
    /// built-in patterns (`builtin_values`: on; they are last in `blocked_values`, the card
    /// candidate in `cards`) are looked for by `rules::may_hold_builtin` instead.
    any_value: MetaRegex,
    user_values: bool,
    builtin_values: bool,
    /// One set of every key pattern, so a key is matched in one pass.
    any_key: MetaRegex,
    /// Search caches owned by this redactor (one processor task), and the decision for each
    /// key seen (keys repeat in every span).
    scratch: RefCell<Scratch>,
    cards: Option<Regex>,
    allowed_values: Vec<Regex>,
    action: Action,
    hash_key: Vec<u8>,
    summary: Summary,
}

struct Scratch {
    values: MetaCache,
    keys: MetaCache,
    /// Keys seen and whether they are blocked (foldhash: keys are short, SipHash was ~2% of
    /// the collector's CPU here).
    key_blocked: HashMap<String, bool, foldhash::fast::RandomState>,
}

/// Keys remembered at most; past it the memory starts again (keys are few in practice).
const KEY_MEMORY: usize = 4096;

/// What was redacted in one span.
#[derive(Default)]
struct Tally {
    masked: i64,
    dropped: i64,
    keys: BTreeSet<String>,
}

impl Tally {
    /// A field of the span itself (its name, its status message...) was masked.
    fn mask(&mut self, field: &str) {
        self.masked += 1;
        self.keys.insert(field.to_string());
    }
}

impl Redactor {
    pub fn new(c: &RedactionConfig) -> Result<Redactor, String> {
        let compile =
            |p: &str, anchored| rules::compile(p, anchored).map_err(|e| format!("{p:?}: {e}"));
        let mut blocked_keys = c
            .blocked_keys
            .iter()
            .map(|p| compile(p, true))
            .collect::<Result<Vec<_>, _>>()?;
        let mut blocked_values = c
            .blocked_values
            .iter()
            .map(|p| compile(p, false))
            .collect::<Result<Vec<_>, _>>()?;
        // The user's value patterns are searched for together; the built-in ones are looked
        // for first by `rules::may_hold_builtin`, much cheaper than any regex.
        let users: Vec<&str> = blocked_values.iter().map(|r| r.as_str()).collect();
        let any_value = MetaRegex::new_many(&users).map_err(|e| e.to_string())?;
        let user_values = !users.is_empty();
        let mut cards = None;
        if c.builtin_rules {
            blocked_keys.push(Regex::new(rules::BUILTIN_KEY).map_err(|e| e.to_string())?);
            for (_, p) in rules::BUILTIN_VALUES {
                blocked_values.push(Regex::new(p).map_err(|e| e.to_string())?);
            }
            cards = Some(Regex::new(rules::CARD_CANDIDATE).map_err(|e| e.to_string())?);
        }
        let keys: Vec<&str> = blocked_keys.iter().map(|r| r.as_str()).collect();
        let any_key = MetaRegex::new_many(&keys).map_err(|e| e.to_string())?;
        let scratch = RefCell::new(Scratch {
            values: any_value.create_cache(),
            keys: any_key.create_cache(),
            key_blocked: HashMap::default(),
        });
        Ok(Redactor {
            allow_all_keys: c.allow_all_keys,
            allowed_keys: c.allowed_keys.iter().cloned().collect(),
            any_value,
            user_values,
            builtin_values: c.builtin_rules,
            any_key,
            scratch,
            blocked_values,
            cards,
            allowed_values: c
                .allowed_values
                .iter()
                .map(|p| compile(p, true))
                .collect::<Result<Vec<_>, _>>()?,
            action: c.action,
            hash_key: c.hash_key.clone().unwrap_or_default().into_bytes(),
            summary: c.summary,
        })
    }

    fn replacement(&self, secret: &str) -> String {
        match self.action {
            Action::Hash => {
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.hash_key)
                    .expect("HMAC takes keys of any length");
                mac.update(secret.as_bytes());
                let digest = mac.finalize().into_bytes();
                format!("hmac-sha256:{}", spanlake_core::ids::to_hex(&digest))
            }
            Action::Mask | Action::Drop => MASK.to_string(),
        }
    }

    fn key_blocked(&self, key: &str) -> bool {
        let mut scratch = self.scratch.borrow_mut();
        if let Some(&b) = scratch.key_blocked.get(key) {
            return b;
        }
        let Scratch {
            keys, key_blocked, ..
        } = &mut *scratch;
        let blocked = self
            .any_key
            .search_with(keys, &Input::new(key).earliest(true))
            .is_some();
        if key_blocked.len() >= KEY_MEMORY {
            key_blocked.clear();
        }
        key_blocked.insert(key.to_string(), blocked);
        blocked
    }

    /// Whether a value pattern may match somewhere in `s`: `false` only when none does.
    fn may_hold_secret(&self, s: &str) -> bool {
        if self.builtin_values && rules::may_hold_builtin(s) {
            return true;
        }
        if !self.user_values {
            return false;
        }
        let mut scratch = self.scratch.borrow_mut();
        self.any_value
            .search_with(&mut scratch.values, &Input::new(s).earliest(true))
            .is_some()
    }

    fn allowed_value(&self, s: &str) -> bool {
        self.allowed_values.iter().any(|r| r.is_match(s))
    }

    /// Redact the secrets inside a string. Returns whether it changed.
    pub fn scrub_text(&self, s: &mut String) -> bool {
        let t = s.trim_start();
        if (t.starts_with('{') || t.starts_with('['))
            && t.len() > 1
            && let Ok(mut doc) = serde_json::from_str::<Json>(s)
        {
            if self.scrub_json(&mut doc) {
                *s = doc.to_string();
                return true;
            }
            // A JSON document with nothing secret may still hold secrets as plain text
            // patterns in its strings: those were checked by scrub_json.
            return false;
        }
        if !self.may_hold_secret(s) {
            return false;
        }
        let mut changed = false;
        for re in &self.blocked_values {
            if re.is_match(s) {
                let out = re.replace_all(s, |m: &regex::Captures<'_>| {
                    let hit = &m[0];
                    if self.allowed_value(hit) {
                        hit.to_string()
                    } else {
                        self.replacement(hit)
                    }
                });
                if out != s.as_str() {
                    *s = out.into_owned();
                    changed = true;
                }
            }
        }
        if let Some(cards) = &self.cards
            && cards.is_match(s)
        {
            let out = cards.replace_all(s, |m: &regex::Captures<'_>| {
                let hit = &m[0];
                let digits: Vec<u8> = hit
                    .bytes()
                    .filter(u8::is_ascii_digit)
                    .map(|b| b - b'0')
                    .collect();
                if rules::luhn(&digits) && !self.allowed_value(hit) {
                    self.replacement(hit)
                } else {
                    hit.to_string()
                }
            });
            if out != s.as_str() {
                *s = out.into_owned();
                changed = true;
            }
        }
        changed
    }

    fn scrub_json(&self, v: &mut Json) -> bool {
        match v {
            Json::String(s) => self.scrub_text(s),
            Json::Array(items) => items
                .iter_mut()
                .fold(false, |acc, x| self.scrub_json(x) | acc),
            Json::Object(map) => {
                let mut changed = false;
                if self.action == Action::Drop {
                    let before = map.len();
                    map.retain(|k, _| !self.key_blocked(k));
                    changed |= map.len() != before;
                }
                for (k, val) in map.iter_mut() {
                    if self.key_blocked(k) {
                        let text = match &*val {
                            Json::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        *val = Json::String(self.replacement(&text));
                        changed = true;
                    } else {
                        changed |= self.scrub_json(val);
                    }
                }
                changed
            }
            _ => false,
        }
    }

    /// Redact a value in place. Returns whether it changed.
    /// `prefix` and `key` name the value in the summary (`nested.token`).
    fn scrub_value(&self, v: &mut AnyValue, tally: &mut Tally, prefix: &str, key: &str) -> bool {
        match &mut v.value {
            Some(Value::StringValue(s)) => self.scrub_text(s),
            Some(Value::ArrayValue(a)) => a.values.iter_mut().fold(false, |acc, x| {
                self.scrub_value(x, tally, prefix, key) | acc
            }),
            Some(Value::KvlistValue(kv)) => {
                self.scrub_attrs(&mut kv.values, tally, &format!("{prefix}{key}.")) > 0
            }
            _ => false,
        }
    }

    /// Redact a list of attributes; returns how many were masked or dropped. `prefix` names
    /// nested keys in the summary.
    fn scrub_attrs(&self, kvs: &mut Vec<KeyValue>, tally: &mut Tally, prefix: &str) -> usize {
        let mut hits = 0;
        kvs.retain_mut(|kv| {
            if !self.allow_all_keys && !self.allowed_keys.contains(&kv.key) {
                tally.dropped += 1;
                tally.keys.insert(format!("{prefix}{}", kv.key));
                hits += 1;
                return false;
            }
            if self.key_blocked(&kv.key) {
                hits += 1;
                tally.keys.insert(format!("{prefix}{}", kv.key));
                if self.action == Action::Drop {
                    tally.dropped += 1;
                    return false;
                }
                let mut text = String::new();
                spanlake_exporter_text(kv.value.as_ref(), &mut text);
                kv.value = Some(AnyValue {
                    value: Some(Value::StringValue(self.replacement(&text))),
                });
                tally.masked += 1;
                return true;
            }
            if let Some(v) = kv.value.as_mut()
                && self.scrub_value(v, tally, prefix, &kv.key)
            {
                hits += 1;
                tally.keys.insert(format!("{prefix}{}", kv.key));
                if self.action == Action::Drop {
                    tally.dropped += 1;
                    return false;
                }
                tally.masked += 1;
            }
            true
        });
        hits
    }

    /// The redacted form of a string, or `None` when it holds no secret (the common case:
    /// nothing is copied then).
    pub fn scrub_str(&self, s: &str) -> Option<String> {
        let t = s.trim_start();
        let json_like = (t.starts_with('{') || t.starts_with('[')) && t.len() > 1;
        if !json_like && !self.may_hold_secret(s) {
            return None;
        }
        let mut owned = s.to_owned();
        self.scrub_text(&mut owned).then_some(owned)
    }

    /// Redact a string field of a block: `Some` with the new text's place when it changed.
    fn scrub_field(&self, b: &mut SpanBlock, s: Str) -> Option<Str> {
        // Most status messages and trace states are empty.
        if s.is_empty() {
            return None;
        }
        let new = self.scrub_str(b.str(s))?;
        Some(b.push_str(&new))
    }

    /// Redact the attributes `rows` of a block; values are replaced in place. Returns the new
    /// rows when some were dropped (the kept ones are copied to the table's end).
    fn scrub_block_attrs(
        &self,
        b: &mut SpanBlock,
        rows: Rows,
        tally: &mut Tally,
        prefix: &str,
        memo: &mut KeyMemo,
    ) -> Option<Rows> {
        let mut dropped: Vec<usize> = Vec::new();
        for (place, j) in rows.range().enumerate() {
            let a = b.attr_table()[j];
            // Most attributes: the very record found clean at this place of the previous span
            // (a block stores a repeated key and value once), compared without reading it.
            if memo.clean_record(place, &a) {
                continue;
            }
            // Else a value that is neither a string nor nested (a number, a bool, bytes) under
            // a key judged clean there: such values are never scanned.
            match a.value() {
                BlockValue::Str(_) | BlockValue::Nested(_) => {}
                _ if memo.clean_key(place, a.key()) => {
                    memo.found_clean_record(place, a);
                    continue;
                }
                _ => {}
            }
            let key = b.str(a.key());
            let verdict = memo.verdict(place, a.key(), || {
                if !self.allow_all_keys && !self.allowed_keys.contains(key) {
                    KeyVerdict::NotAllowed
                } else if self.key_blocked(key) {
                    KeyVerdict::Blocked
                } else {
                    KeyVerdict::Clean
                }
            });
            if verdict == KeyVerdict::NotAllowed {
                tally.dropped += 1;
                tally.keys.insert(format!("{prefix}{key}"));
                dropped.push(j);
                continue;
            }
            if verdict == KeyVerdict::Blocked {
                tally.keys.insert(format!("{prefix}{key}"));
                if self.action == Action::Drop {
                    tally.dropped += 1;
                    dropped.push(j);
                    continue;
                }
                let mut text = String::new();
                spanlake_exporter_text(b.any_value(a.value()).as_ref(), &mut text);
                let masked = b.push_str(&self.replacement(&text));
                b.attrs_mut()[j].set_value(BlockValue::Str(masked));
                tally.masked += 1;
                continue;
            }
            let replaced = match a.value() {
                BlockValue::Str(v) => self.scrub_field(b, v).map(BlockValue::Str),
                BlockValue::Nested(_) => {
                    let mut v = b.any_value(a.value()).unwrap_or_default();
                    let key = key.to_owned();
                    self.scrub_value(&mut v, tally, prefix, &key)
                        .then(|| BlockValue::Nested(b.push_raw(&v.encode_to_vec())))
                }
                _ => None,
            };
            if let Some(value) = replaced {
                let key = b.str(a.key());
                tally.keys.insert(format!("{prefix}{key}"));
                if self.action == Action::Drop {
                    tally.dropped += 1;
                    dropped.push(j);
                } else {
                    b.attrs_mut()[j].set_value(value);
                    tally.masked += 1;
                }
            } else {
                memo.found_clean_record(place, a);
            }
        }
        if dropped.is_empty() {
            return None;
        }
        let start = b.attr_table().len();
        for j in rows.range() {
            if !dropped.contains(&j) {
                let a = b.attr_table()[j];
                b.attrs_mut().push(a);
            }
        }
        Some(Rows {
            start: start as u32,
            end: b.attr_table().len() as u32,
        })
    }

    /// Redact every span of a batch in place.
    pub fn redact(&self, blocks: &mut [SpanBlock]) {
        for b in blocks {
            self.redact_block(b);
        }
    }

    fn redact_block(&self, b: &mut SpanBlock) {
        let mut ignored = Tally::default();
        // Span attributes repeat their keys span after span; the others have a memo of their own.
        let (mut memo, mut other) = (KeyMemo::default(), KeyMemo::default());
        for ri in 0..b.resources().len() {
            let r = b.resources()[ri];
            if let Some(rows) =
                self.scrub_block_attrs(b, r.attrs, &mut ignored, "resource.", &mut other)
            {
                b.resources_mut()[ri].attrs = rows;
            }
        }
        for si in 0..b.scopes().len() {
            let sc = b.scopes()[si];
            if !sc.present {
                continue;
            }
            if let Some(rows) =
                self.scrub_block_attrs(b, sc.attrs, &mut ignored, "scope.", &mut other)
            {
                b.scopes_mut()[si].attrs = rows;
            }
            if let Some(name) = self.scrub_field(b, sc.name) {
                b.scopes_mut()[si].name = name;
            }
        }
        // Span names found clean, a few by their length and ends: a block's spans repeat a
        // handful of names, each stored anew.
        let mut clean_names: [Option<Str>; 8] = [None; 8];
        for i in 0..b.spans().len() {
            let sp = b.spans()[i];
            let mut tally = Tally::default();
            let text = b.str(sp.name).as_bytes();
            let slot = text_slot(text, clean_names.len());
            let known = clean_names[slot].is_some_and(|c| same_bytes(b.str(c).as_bytes(), text));
            if !known {
                match self.scrub_field(b, sp.name) {
                    Some(name) => {
                        b.spans_mut()[i].name = name;
                        tally.mask("name");
                    }
                    None => clean_names[slot] = Some(sp.name),
                }
            }
            if let Some(st) = sp.status
                && let Some(message) = self.scrub_field(b, st.message)
            {
                b.spans_mut()[i].status = Some(BlockStatus { message, ..st });
                tally.mask("status.message");
            }
            if let Some(rows) = self.scrub_block_attrs(b, sp.attrs, &mut tally, "", &mut memo) {
                b.spans_mut()[i].attrs = rows;
            }
            for e in sp.events.range() {
                let ev = b.events()[e];
                if let Some(name) = self.scrub_field(b, ev.name) {
                    b.events_mut()[e].name = name;
                    tally.mask("event.name");
                }
                if let Some(rows) =
                    self.scrub_block_attrs(b, ev.attrs, &mut tally, "event.", &mut other)
                {
                    b.events_mut()[e].attrs = rows;
                }
            }
            for l in sp.links.range() {
                let link = b.links()[l];
                if let Some(rows) =
                    self.scrub_block_attrs(b, link.attrs, &mut tally, "link.", &mut other)
                {
                    b.links_mut()[l].attrs = rows;
                }
                if let Some(state) = self.scrub_field(b, link.trace_state) {
                    b.links_mut()[l].trace_state = state;
                }
            }
            if let Some(state) = self.scrub_field(b, sp.trace_state) {
                b.spans_mut()[i].trace_state = state;
            }
            self.summarize_span(b, i, &tally);
        }
    }

    /// Say on the span what was redacted (`summary: info|debug`).
    fn summarize_span(&self, b: &mut SpanBlock, i: usize, tally: &Tally) {
        if self.summary == Summary::Silent || (tally.masked == 0 && tally.dropped == 0) {
            return;
        }
        let mut added = vec![
            Attr::new(
                b.push_str("redaction.masked.count"),
                BlockValue::Int(tally.masked),
            ),
            Attr::new(
                b.push_str("redaction.dropped.count"),
                BlockValue::Int(tally.dropped),
            ),
        ];
        if self.summary == Summary::Debug {
            let keys = tally.keys.iter().cloned().collect::<Vec<_>>().join(",");
            let key = b.push_str("redaction.keys");
            added.push(Attr::new(key, BlockValue::Str(b.push_str(&keys))));
        }
        b.set_span_attrs(i, |_| true, &added);
    }

    /// Redact every log record of a batch in place: body, event name, attributes, resource
    /// and scope (trace-level events and trace metadata arrive as log records).
    pub fn redact_logs(&self, groups: &mut [ResourceLogs]) {
        let mut ignored = Tally::default();
        for rl in groups.iter_mut() {
            if let Some(r) = rl.resource.as_mut() {
                self.scrub_attrs(&mut r.attributes, &mut ignored, "resource.");
            }
            for sl in rl.scope_logs.iter_mut() {
                if let Some(sc) = sl.scope.as_mut() {
                    self.scrub_attrs(&mut sc.attributes, &mut ignored, "scope.");
                    self.scrub_text(&mut sc.name);
                }
                for rec in sl.log_records.iter_mut() {
                    let mut tally = Tally::default();
                    if self.scrub_text(&mut rec.event_name) {
                        tally.mask("event_name");
                    }
                    if let Some(body) = rec.body.as_mut()
                        && self.scrub_value(body, &mut tally, "", "body")
                    {
                        tally.mask("body");
                    }
                    self.scrub_attrs(&mut rec.attributes, &mut tally, "");
                    self.summarize(&mut rec.attributes, &tally);
                }
            }
        }
    }

    /// Say on the item what was redacted (`summary: info|debug`).
    fn summarize(&self, attributes: &mut Vec<KeyValue>, tally: &Tally) {
        if self.summary == Summary::Silent || (tally.masked == 0 && tally.dropped == 0) {
            return;
        }
        let int = |k: &str, v: i64| KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(Value::IntValue(v)),
            }),
            ..Default::default()
        };
        attributes.push(int("redaction.masked.count", tally.masked));
        attributes.push(int("redaction.dropped.count", tally.dropped));
        if self.summary == Summary::Debug {
            let keys = tally.keys.iter().cloned().collect::<Vec<_>>().join(",");
            attributes.push(KeyValue {
                key: "redaction.keys".into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue(keys)),
                }),
                ..Default::default()
            });
        }
    }
}

/// The text of a value, for hashing it whole.
fn spanlake_exporter_text(v: Option<&AnyValue>, out: &mut String) {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => out.push_str(s),
        Some(Value::IntValue(i)) => out.push_str(&i.to_string()),
        Some(Value::DoubleValue(d)) => out.push_str(&d.to_string()),
        Some(Value::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(other) => out.push_str(&format!("{other:?}")),
        None => {}
    }
}

pub struct RedactionProcessor {
    name: String,
    redactor: Redactor,
}

impl RedactionProcessor {
    pub fn new(name: impl Into<String>, config: &RedactionConfig) -> Result<Self, String> {
        Ok(RedactionProcessor {
            name: name.into(),
            redactor: Redactor::new(config)?,
        })
    }
}

impl Processor for RedactionProcessor {
    fn start(
        self: Box<Self>,
        mut input: Receiver,
        output: Fanout,
        _shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            while let Some(mut batch) = input.recv().await {
                match &mut batch.signal {
                    Signal::Spans(blocks) => self.redactor.redact(blocks),
                    Signal::Logs(groups) => self.redactor.redact_logs(groups),
                    Signal::EndTrace(end) => {
                        self.redactor.scrub_text(&mut end.status.message);
                    }
                }
                if let Err(e) = output.send(batch).await {
                    tracing::error!(processor = %self.name, error = %e, "redacted batch lost: the next stage is gone");
                    return;
                }
            }
        })
    }
}

/// What the key rules say of an attribute key.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyVerdict {
    Clean,
    /// Not in `allowed_keys`: the attribute is dropped.
    NotAllowed,
    /// Matched by a key rule: the value is masked (or the attribute dropped).
    Blocked,
}

/// The verdicts of one block's keys by place in an attribute list, and the last attribute
/// found clean at each place. A block stores a key or string value once for the spans that
/// repeat it at the same place (see `SpanBlock::decode`), so the same key is recognised by its
/// place in the block's text, without hashing it again, and the same attribute is not scanned
/// again (a value's verdict is its text's alone).
#[derive(Default)]
struct KeyMemo {
    by_place: Vec<Remembered>,
}

#[derive(Clone, Copy)]
struct Remembered {
    key: Str,
    verdict: KeyVerdict,
    /// The whole attribute last found clean here, key and value: the same record again is
    /// clean.
    record: Option<Attr>,
}

impl KeyMemo {
    const PLACES: usize = 64;

    fn verdict(
        &mut self,
        place: usize,
        key: Str,
        judge: impl FnOnce() -> KeyVerdict,
    ) -> KeyVerdict {
        if let Some(r) = self.by_place.get(place)
            && r.key == key
            && !key.is_empty()
        {
            return r.verdict;
        }
        let verdict = judge();
        if place < Self::PLACES {
            let forget = Remembered {
                key: Str::default(),
                verdict: KeyVerdict::Clean,
                record: None,
            };
            if self.by_place.len() <= place {
                self.by_place.resize(place + 1, forget);
            }
            self.by_place[place] = Remembered {
                key,
                verdict,
                ..forget
            };
        }
        verdict
    }

    /// Whether `a` is the very record last found clean at `place` (its key judged clean, its
    /// value holding no secret).
    #[inline]
    fn clean_record(&self, place: usize, a: &Attr) -> bool {
        self.by_place
            .get(place)
            .is_some_and(|r| r.record.is_some_and(|c| c.same_record(a)))
    }

    /// Remember `a`, kept as it is under the key judged at `place`, as clean.
    fn found_clean_record(&mut self, place: usize, a: Attr) {
        if let Some(r) = self.by_place.get_mut(place)
            && r.key == a.key()
            && r.verdict == KeyVerdict::Clean
        {
            r.record = Some(a);
        }
    }

    /// Whether `key` at `place` is the very key last judged there, and clean.
    #[inline]
    fn clean_key(&self, place: usize, key: Str) -> bool {
        self.by_place
            .get(place)
            .is_some_and(|r| r.key == key && r.verdict == KeyVerdict::Clean && !key.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, InstrumentationScope, KeyValueList};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
    const AWS: &str = "AKIAIOSFODNN7EXAMPLE";
    const CARD: &str = "4111 1111 1111 1111";
    const PEM: &str =
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq\n-----END RSA PRIVATE KEY-----";

    fn s(v: &str) -> Option<AnyValue> {
        Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        })
    }

    fn kv(k: &str, v: Option<AnyValue>) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: v,
            ..Default::default()
        }
    }

    /// A span with a secret planted in every surface, and plain values beside them.
    /// Spans as a redaction processor passes them on.
    fn redacted(r: &Redactor, groups: Vec<ResourceSpans>) -> Vec<ResourceSpans> {
        let mut blocks = vec![SpanBlock::from_prost(&groups)];
        r.redact(&mut blocks);
        blocks[0].to_prost()
    }

    fn planted() -> Vec<ResourceSpans> {
        let span = Span {
            name: format!("login with Bearer {JWT}"),
            attributes: vec![
                kv("password", s("hunter2-supersecret")),
                kv(
                    "db.password",
                    Some(AnyValue {
                        value: Some(Value::IntValue(12345678)),
                    }),
                ),
                kv(
                    "http.request.header.authorization",
                    s("Basic dXNlcjpwYXNzd29yZA=="),
                ),
                kv("note", s(&format!("paid with {CARD} ok"))),
                kv("aws", s(&format!("key={AWS}"))),
                kv(
                    "gen_ai.prompt",
                    s(&format!(
                        r#"{{"messages":[{{"role":"user","content":"my card is {CARD}"}}],"api_key":"sk-live-123456","n":2}}"#
                    )),
                ),
                kv(
                    "list",
                    Some(AnyValue {
                        value: Some(Value::ArrayValue(ArrayValue {
                            values: vec![s(JWT).expect("v"), s("plain").expect("v")],
                        })),
                    }),
                ),
                kv(
                    "nested",
                    Some(AnyValue {
                        value: Some(Value::KvlistValue(KeyValueList {
                            values: vec![kv("token", s("abcdefgh-secret")), kv("ok", s("fine"))],
                        })),
                    }),
                ),
                kv(
                    "gen_ai.usage.input_tokens",
                    Some(AnyValue {
                        value: Some(Value::IntValue(42)),
                    }),
                ),
                kv("http.route", s("/cart")),
                kv("order.id", s("1234-5678")),
            ],
            events: vec![Event {
                name: format!("cookie set: Bearer {JWT}"),
                attributes: vec![
                    kv("set-cookie", s("session=abc123def456")),
                    kv("pem", s(PEM)),
                ],
                ..Default::default()
            }],
            links: vec![Link {
                attributes: vec![kv("api_key", s("link-secret-value"))],
                ..Default::default()
            }],
            status: Some(Status {
                code: 2,
                message: format!("auth failed for {AWS}"),
            }),
            ..Default::default()
        };
        vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", s("shop")),
                    kv("client_secret", s("res-secret-value")),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "lib".into(),
                    attributes: vec![kv("private_key", s("scope-secret-value"))],
                    ..Default::default()
                }),
                spans: vec![span],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }]
    }

    const SECRETS: &[&str] = &[
        "hunter2-supersecret",
        "12345678",
        "dXNlcjpwYXNzd29yZA==",
        "4111 1111 1111 1111",
        "AKIAIOSFODNN7EXAMPLE",
        "sk-live-123456",
        "abcdefgh-secret",
        "session=abc123def456",
        "MIIEowIBAAKCAQEA7bq",
        "link-secret-value",
        "res-secret-value",
        "scope-secret-value",
        "eyJhbGciOiJIUzI1NiJ9",
    ];

    fn builtin(action: Action) -> Redactor {
        Redactor::new(&RedactionConfig {
            builtin_rules: true,
            action,
            hash_key: Some("k".into()),
            summary: Summary::Debug,
            ..Default::default()
        })
        .expect("valid rules")
    }

    #[test]
    fn no_planted_secret_survives_and_plain_values_are_kept() {
        for action in [Action::Mask, Action::Hash, Action::Drop] {
            let groups = redacted(&builtin(action), planted());
            let dump = format!("{groups:?}");
            for secret in SECRETS {
                assert!(
                    !dump.contains(secret),
                    "{action:?}: {secret} survived in {dump}"
                );
            }
            for plain in [
                "/cart",
                "1234-5678",
                "shop",
                "gen_ai.usage.input_tokens",
                "IntValue(42)",
            ] {
                assert!(dump.contains(plain), "{action:?}: {plain} was lost");
            }
        }
    }

    #[test]
    fn masks_keep_the_shape() {
        let groups = redacted(&builtin(Action::Mask), planted());
        let span = &groups[0].scope_spans[0].spans[0];
        let get = |k: &str| {
            span.attributes
                .iter()
                .find(|a| a.key == k)
                .and_then(|a| a.value.clone())
                .and_then(|v| v.value)
        };
        assert_eq!(get("password"), Some(Value::StringValue(MASK.into())));
        assert_eq!(
            get("note"),
            Some(Value::StringValue("paid with **** ok".into()))
        );
        assert_eq!(get("http.route"), Some(Value::StringValue("/cart".into())));
        assert_eq!(
            get("gen_ai.prompt"),
            Some(Value::StringValue(r#"{"messages":[{"role":"user","content":"my card is ****"}],"api_key":"****","n":2}"#.into()))
        );
        assert_eq!(span.name, "login with ****");
        assert_eq!(
            span.status.as_ref().map(|s| s.message.as_str()),
            Some("auth failed for ****")
        );
        assert_eq!(get("redaction.masked.count"), Some(Value::IntValue(15)));
        let keys = get("redaction.keys");
        assert_eq!(keys, Some(Value::StringValue("aws,db.password,event.name,event.pem,event.set-cookie,gen_ai.prompt,http.request.header.authorization,link.api_key,list,name,nested,nested.token,note,password,status.message".into())));
    }

    /// A block read with its request keeps the request's bytes (which the write-ahead log
    /// writes instead of the block) only while redaction changed nothing: a secret in any
    /// place, masked or dropped, or a key the allowlist drops, lets them go.
    #[test]
    fn a_block_redaction_changed_no_longer_has_its_request() {
        let span = |name: &str, attributes: Vec<KeyValue>| Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: name.into(),
            attributes,
            ..Default::default()
        };
        let request = |span: Span, resource: Vec<KeyValue>, scope: Vec<KeyValue>| {
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(Resource {
                        attributes: resource,
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "lib".into(),
                            attributes: scope,
                            ..Default::default()
                        }),
                        spans: vec![span],
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                }],
            }
            .encode_to_vec()
        };
        let plain = || vec![kv("http.route", s("/cart"))];
        let with_event = Span {
            events: vec![Event {
                name: "e".into(),
                attributes: vec![kv("set-cookie", s("session=abc123def456"))],
                ..Default::default()
            }],
            ..span("GET /cart", plain())
        };
        let with_link = Span {
            links: vec![Link {
                trace_id: vec![3; 16],
                span_id: vec![4; 8],
                attributes: vec![kv("api_key", s("link-secret-value"))],
                ..Default::default()
            }],
            ..span("GET /cart", plain())
        };
        let with_status = Span {
            status: Some(Status {
                code: 2,
                message: format!("auth failed for {AWS}"),
            }),
            ..span("GET /cart", plain())
        };
        let changed = [
            (
                "span name",
                request(span(&format!("Bearer {JWT}"), plain()), plain(), plain()),
            ),
            (
                "blocked key",
                request(
                    span("GET /", vec![kv("password", s("x"))]),
                    plain(),
                    plain(),
                ),
            ),
            (
                "value",
                request(span("GET /", vec![kv("note", s(CARD))]), plain(), plain()),
            ),
            ("event", request(with_event, plain(), plain())),
            ("link", request(with_link, plain(), plain())),
            ("status", request(with_status, plain(), plain())),
            (
                "resource",
                request(
                    span("GET /", plain()),
                    vec![kv("client_secret", s("v"))],
                    plain(),
                ),
            ),
            (
                "scope",
                request(
                    span("GET /", plain()),
                    plain(),
                    vec![kv("private_key", s("v"))],
                ),
            ),
        ];
        for action in [Action::Mask, Action::Hash, Action::Drop] {
            let r = builtin(action);
            for (place, body) in &changed {
                let (block, _) = SpanBlock::decode_request(body.clone(), true).expect("decodes");
                assert_eq!(
                    block.request(),
                    Some(&body[..]),
                    "{place}: read with its request"
                );
                let mut blocks = vec![block];
                r.redact(&mut blocks);
                assert_eq!(
                    blocks[0].request(),
                    None,
                    "{place}, {action:?}: redacted, so changed"
                );
            }
            let clean = request(span("GET /cart", plain()), plain(), plain());
            let mut blocks = vec![
                SpanBlock::decode_request(clean.clone(), true)
                    .expect("decodes")
                    .0,
            ];
            r.redact(&mut blocks);
            assert_eq!(
                blocks[0].request(),
                Some(&clean[..]),
                "{action:?}: nothing to redact"
            );
        }
        let allowlist = Redactor::new(&RedactionConfig {
            allow_all_keys: false,
            allowed_keys: vec!["http.route".into()],
            ..Default::default()
        })
        .expect("valid");
        let body = request(
            span("GET /", vec![kv("user.email", s("a@b.c"))]),
            plain(),
            plain(),
        );
        let mut blocks = vec![SpanBlock::decode_request(body, true).expect("decodes").0];
        allowlist.redact(&mut blocks);
        assert_eq!(blocks[0].request(), None, "a key the allowlist drops");
    }

    #[test]
    fn hashes_join_equal_secrets() {
        let r = builtin(Action::Hash);
        let (mut a, mut b) = (String::from(AWS), String::from(AWS));
        assert!(r.scrub_text(&mut a) && r.scrub_text(&mut b));
        assert_eq!(a, b);
        assert!(a.starts_with("hmac-sha256:") && a.len() == "hmac-sha256:".len() + 64);
        let other = Redactor::new(&RedactionConfig {
            builtin_rules: true,
            action: Action::Hash,
            hash_key: Some("other".into()),
            ..Default::default()
        })
        .expect("valid");
        let mut c = String::from(AWS);
        other.scrub_text(&mut c);
        assert_ne!(a, c, "the key matters");
    }

    #[test]
    fn user_rules_allowed_keys_and_allowed_values() {
        let c = RedactionConfig {
            allow_all_keys: false,
            allowed_keys: vec!["http.route".into(), "user.email".into(), "ticket".into()],
            blocked_keys: vec!["user\\..*".into()],
            blocked_values: vec![r"TCK-\d+".into()],
            allowed_values: vec!["TCK-0000".into()],
            ..Default::default()
        };
        assert!(c.validate().is_empty());
        let r = Redactor::new(&c).expect("valid");
        let mut attrs = vec![
            kv("http.route", s("/a")),
            kv("user.email", s("a@b.c")),
            kv("ticket", s("TCK-0000 and TCK-1234")),
            kv("other", s("x")),
        ];
        let mut t = Tally::default();
        r.scrub_attrs(&mut attrs, &mut t, "");
        let got: Vec<(String, Option<Value>)> = attrs
            .into_iter()
            .map(|a| (a.key, a.value.and_then(|v| v.value)))
            .collect();
        assert_eq!(
            got,
            vec![
                ("http.route".into(), Some(Value::StringValue("/a".into()))),
                ("user.email".into(), Some(Value::StringValue(MASK.into()))),
                (
                    "ticket".into(),
                    Some(Value::StringValue("TCK-0000 and ****".into()))
                ),
            ]
        );
        assert_eq!((t.masked, t.dropped), (2, 1));
    }

    /// A span of string attributes.
    fn span_of(attrs: &[(&str, &str)]) -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            attributes: attrs.iter().map(|(k, v)| kv(k, s(v))).collect(),
            ..Default::default()
        }
    }

    /// The block the receiver makes of one request of `spans` (one resource, one scope).
    fn decoded(spans: Vec<Span>) -> SpanBlock {
        let body = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        SpanBlock::decode(&body, true).expect("decodes").0
    }

    /// Each span's attributes after `r` redacted `block`, without redaction's own.
    fn redacted_attrs(r: &Redactor, block: SpanBlock) -> Vec<Vec<(String, Option<Value>)>> {
        let mut blocks = vec![block];
        r.redact(&mut blocks);
        blocks[0].to_prost()[0].scope_spans[0]
            .spans
            .iter()
            .map(|sp| {
                sp.attributes
                    .iter()
                    .filter(|a| !a.key.starts_with("redaction."))
                    .map(|a| (a.key.clone(), a.value.clone().and_then(|v| v.value)))
                    .collect()
            })
            .collect()
    }

    /// Spans decoded from one request share repeated keys; each span's attributes still get
    /// their own key's verdict, whether its key is shared, at another place, or new there.
    #[test]
    fn each_span_gets_its_keys_verdicts_when_keys_are_shared() {
        let block = decoded(vec![
            span_of(&[("password", "p-1"), ("user", "u-1"), ("other", "o-1")]),
            span_of(&[("password", "p-2"), ("user", "u-2"), ("other", "o-2")]),
            span_of(&[("user", "u-3"), ("password", "p-3"), ("other", "o-3")]),
            span_of(&[("user", "u-4"), ("other", "o-4"), ("password", "p-4")]),
        ]);
        let key = |span: usize, place: usize| block.attrs(block.spans()[span].attrs)[place].key();
        assert_eq!(
            key(1, 0),
            key(0, 0),
            "the request's repeated keys are shared"
        );
        let r = Redactor::new(&RedactionConfig {
            builtin_rules: true,
            allow_all_keys: false,
            allowed_keys: vec!["password".into(), "user".into()],
            ..Default::default()
        })
        .expect("valid");
        for (i, got) in redacted_attrs(&r, block).into_iter().enumerate() {
            let n = i + 1;
            let mut want = vec![
                (
                    "password".to_string(),
                    Some(Value::StringValue(MASK.into())),
                ),
                (
                    "user".to_string(),
                    Some(Value::StringValue(format!("u-{n}"))),
                ),
            ];
            if i >= 2 {
                want.reverse();
            }
            assert_eq!(got, want, "span {n}");
        }
    }

    /// Spans decoded from one request share repeated values; a value found clean is not
    /// scanned again, and each span still gets its own value's verdict.
    #[test]
    fn each_span_gets_its_values_verdict_when_values_are_shared() {
        let values = ["GET /", "GET /", JWT, JWT, "GET /", "GET /", AWS, "GET /"];
        let block = decoded(
            values
                .iter()
                .map(|v| span_of(&[("request", v), ("note", v)]))
                .collect(),
        );
        let value = |span: usize| block.attrs(block.spans()[span].attrs)[0].value();
        assert_eq!(
            value(1),
            value(0),
            "the request's repeated values are shared"
        );
        assert_eq!(value(3), value(2));
        let r = Redactor::new(&RedactionConfig {
            builtin_rules: true,
            ..Default::default()
        })
        .expect("valid");
        for (i, got) in redacted_attrs(&r, block).into_iter().enumerate() {
            let text = match values[i] {
                "GET /" => "GET /",
                _ => MASK,
            };
            let want = |k: &str| (k.to_string(), Some(Value::StringValue(text.into())));
            assert_eq!(got, vec![want("request"), want("note")], "span {i}");
        }
    }

    #[test]
    fn each_span_name_gets_its_verdict_when_names_repeat() {
        // The same length and ends: the clean name and the secret one share a slot of the
        // names found clean.
        let clean = format!("call {}!", "a".repeat(JWT.len()));
        let secret = format!("call {JWT}!");
        let names = [&clean, &secret, &clean, &clean, &secret];
        let spans = names
            .iter()
            .map(|n| Span {
                name: n.to_string(),
                ..span_of(&[])
            })
            .collect();
        let r = Redactor::new(&RedactionConfig {
            builtin_rules: true,
            ..Default::default()
        })
        .expect("valid");
        let mut blocks = vec![decoded(spans)];
        r.redact(&mut blocks);
        let got = blocks[0].to_prost()[0].scope_spans[0].spans.clone();
        for (i, (sp, &name)) in got.iter().zip(&names).enumerate() {
            if name == &clean {
                assert_eq!(&sp.name, name, "span {i}");
            } else {
                assert!(!sp.name.contains(JWT), "span {i}: {}", sp.name);
            }
        }
    }

    #[test]
    fn config_problems_are_named() {
        let c: RedactionConfig =
            serde_yaml::from_str("blocked_values: ['(unclosed']\naction: hash\n").expect("parses");
        let msgs: Vec<String> = c.validate().into_iter().map(|(_, m)| m).collect();
        assert_eq!(msgs.len(), 2);
        assert!(
            msgs[0].starts_with("blocked_values: \"(unclosed\" is not a valid regular expression"),
            "{}",
            msgs[0]
        );
        assert_eq!(
            msgs[1],
            "action: hash needs hash_key (e.g. hash_key: ${env:REDACTION_KEY})"
        );
        assert!(serde_yaml::from_str::<RedactionConfig>("blocked_key_patterns: [x]").is_err());
    }
}
