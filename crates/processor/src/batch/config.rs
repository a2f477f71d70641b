//! Settings of the batch processor.

use std::time::Duration;

use serde::Deserialize;

/// `processors: batch:`. The environment variables `BATCH_MAX`, `BATCH_MS` and `MAX_INFLIGHT`
/// (or their `TRACE_`-prefixed names) override the file; see [`BatchConfig::apply_env`].
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Most spans in one batch; bigger requests are split. Default `100`.
    #[serde(default = "default_max_size")]
    pub max_size: usize,
    /// Most time a span waits for its batch to fill before the batch is sent anyway.
    /// Default `1000ms`.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Most batches being exported at once; past that the processor stops reading its input,
    /// so the queues fill and receivers answer "retry later". Default `3`.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: usize,
    /// Send a partial batch as soon as no more spans are waiting, instead of holding it until
    /// `timeout`. Clients are answered once their spans reach the exporters, so holding a
    /// partial batch makes every small request wait `timeout`; under load the queue is never
    /// empty and batches still fill to `max_size`. Set `false` to always wait for `timeout`.
    /// Default `true`.
    #[serde(default = "default_true")]
    pub flush_when_idle: bool,
}

fn default_true() -> bool {
    true
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_size: default_max_size(),
            timeout: default_timeout(),
            max_inflight: default_max_inflight(),
            flush_when_idle: true,
        }
    }
}

fn default_max_size() -> usize {
    100
}
fn default_timeout() -> Duration {
    Duration::from_millis(1000)
}
fn default_max_inflight() -> usize {
    3
}

/// The variables that override the batch settings, each with its seed-compatible alias.
pub const ENV_OVERRIDES: [(&str, &str); 3] = [
    ("BATCH_MAX", "TRACE_BATCH_MAX"),
    ("BATCH_MS", "TRACE_BATCH_MS"),
    ("MAX_INFLIGHT", "TRACE_MAX_INFLIGHT"),
];

impl BatchConfig {
    /// Apply `BATCH_MAX` (spans), `BATCH_MS` (milliseconds) and `MAX_INFLIGHT` from `env`; the
    /// unprefixed name wins over the `TRACE_` one. Returns what was applied, or every bad value.
    pub fn apply_env(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<String>, Vec<String>> {
        let mut applied = Vec::new();
        let mut errors = Vec::new();
        for (i, (name, alias)) in ENV_OVERRIDES.iter().enumerate() {
            let Some((var, raw)) = env(name)
                .map(|v| (*name, v))
                .or_else(|| env(alias).map(|v| (*alias, v)))
            else {
                continue;
            };
            let value = raw.trim();
            match value.parse::<u64>() {
                Ok(n) if n > 0 => {
                    match i {
                        0 => self.max_size = n as usize,
                        1 => self.timeout = Duration::from_millis(n),
                        _ => self.max_inflight = n as usize,
                    }
                    applied.push(format!("{var}={n}"));
                }
                _ => errors.push(format!(
                    "environment variable {var}={raw:?} must be a whole number above 0"
                )),
            }
        }
        if errors.is_empty() {
            Ok(applied)
        } else {
            Err(errors)
        }
    }

    /// Every problem with these settings, as `(key, message)`. No I/O.
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if self.max_size == 0 {
            p.push(("max_size", "max_size must be at least 1 span".to_string()));
        }
        if self.timeout.is_zero() {
            p.push((
                "timeout",
                "timeout must be above 0 (e.g. 200ms)".to_string(),
            ));
        }
        if self.max_inflight == 0 {
            p.push((
                "max_inflight",
                "max_inflight must be at least 1".to_string(),
            ));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_seeds() {
        let c: BatchConfig = serde_yaml::from_str("{}").expect("defaults");
        assert_eq!(
            (c.max_size, c.timeout, c.max_inflight, c.flush_when_idle),
            (100, Duration::from_millis(1000), 3, true)
        );
        let c: BatchConfig =
            serde_yaml::from_str("max_size: 512\ntimeout: 200ms\nmax_inflight: 8\n").expect("set");
        assert_eq!(
            (c.max_size, c.timeout, c.max_inflight),
            (512, Duration::from_millis(200), 8)
        );
        assert!(serde_yaml::from_str::<BatchConfig>("send_batch_size: 5").is_err());
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut c = BatchConfig::default();
        let env = |k: &str| match k {
            "BATCH_MAX" => Some("50".to_string()),
            "TRACE_BATCH_MAX" => Some("7".to_string()),
            "TRACE_BATCH_MS" => Some("250".to_string()),
            _ => None,
        };
        assert_eq!(
            c.apply_env(&env),
            Ok(vec![
                "BATCH_MAX=50".to_string(),
                "TRACE_BATCH_MS=250".to_string()
            ])
        );
        assert_eq!(
            (c.max_size, c.timeout, c.max_inflight),
            (50, Duration::from_millis(250), 3)
        );
    }

    #[test]
    fn bad_environment_values_are_named() {
        let mut c = BatchConfig::default();
        let env = |k: &str| match k {
            "MAX_INFLIGHT" => Some("lots".to_string()),
            "BATCH_MS" => Some("0".to_string()),
            _ => None,
        };
        assert_eq!(
            c.apply_env(&env),
            Err(vec![
                "environment variable BATCH_MS=\"0\" must be a whole number above 0".to_string(),
                "environment variable MAX_INFLIGHT=\"lots\" must be a whole number above 0"
                    .to_string(),
            ])
        );
    }
}
