//! Settings of the redaction processor, in the OpenTelemetry Collector's terms where they exist.

use serde::Deserialize;

/// `processors: redaction:`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedactionConfig {
    /// Keep attributes whatever their key. When `false`, only `allowed_keys` are kept and every
    /// other attribute is removed. Default `true`.
    #[serde(default = "yes")]
    pub allow_all_keys: bool,
    /// Keys kept when `allow_all_keys` is `false`; their values are still checked.
    #[serde(default)]
    pub allowed_keys: Vec<String>,
    /// Keys whose whole value is secret: exact names or regular expressions, matched against the
    /// whole key, ignoring case (`password`, `.*_token`, `http\.request\.header\..*`).
    #[serde(default)]
    pub blocked_keys: Vec<String>,
    /// Regular expressions for secrets inside any string: every match is redacted.
    #[serde(default)]
    pub blocked_values: Vec<String>,
    /// Regular expressions for values never redacted by `blocked_values` (a whole match).
    #[serde(default)]
    pub allowed_values: Vec<String>,
    /// What happens to a secret: `mask` (replaced by `****`, default), `hash` (HMAC-SHA256 with
    /// `hash_key`, so equal secrets still join) or `drop` (the attribute is removed).
    #[serde(default)]
    pub action: Action,
    /// The HMAC key for `action: hash`; set it from the environment: `${env:REDACTION_KEY}`.
    #[serde(default)]
    pub hash_key: Option<String>,
    /// `silent` (default), `info` (counts of what was redacted as span attributes) or `debug`
    /// (the counts and the redacted keys).
    #[serde(default)]
    pub summary: Summary,
    /// Add the built-in rules (credential-like keys, bearer/basic authorization, JWTs, AWS access
    /// keys, PEM private keys, card numbers that pass the Luhn check; docs/redaction.md).
    /// Default `false`; `pipelines/default.yaml` turns them on.
    #[serde(default)]
    pub builtin_rules: bool,
}

impl Default for RedactionConfig {
    fn default() -> Self {
        RedactionConfig {
            allow_all_keys: true,
            allowed_keys: Vec::new(),
            blocked_keys: Vec::new(),
            blocked_values: Vec::new(),
            allowed_values: Vec::new(),
            action: Action::Mask,
            hash_key: None,
            summary: Summary::Silent,
            builtin_rules: false,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Mask,
    Hash,
    Drop,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Summary {
    #[default]
    Silent,
    Info,
    Debug,
}

impl RedactionConfig {
    /// Every problem with these settings, as `(key, message)`. No I/O.
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        for (field, list, anchored) in [
            ("blocked_keys", &self.blocked_keys, true),
            ("blocked_values", &self.blocked_values, false),
            ("allowed_values", &self.allowed_values, true),
        ] {
            for pattern in list {
                if let Err(e) = super::rules::compile(pattern, anchored) {
                    p.push((
                        field,
                        format!("{field}: {pattern:?} is not a valid regular expression: {e}"),
                    ));
                }
            }
        }
        if self.action == Action::Hash && self.hash_key.as_deref().is_none_or(str::is_empty) {
            p.push((
                "hash_key",
                "action: hash needs hash_key (e.g. hash_key: ${env:REDACTION_KEY})".to_string(),
            ));
        }
        if !self.allow_all_keys && self.allowed_keys.is_empty() {
            p.push(("allowed_keys", "allow_all_keys is false but allowed_keys is empty: every attribute would be removed".to_string()));
        }
        p
    }
}
