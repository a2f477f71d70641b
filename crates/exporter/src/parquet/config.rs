//! Settings of the Parquet exporter.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::wal::WalConfig;

/// `exporters: parquet:`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ParquetConfig {
    /// Root of the lake; spans go under `<path>/spans/date=YYYY-MM-DD/hour=HH/`. Default
    /// `./spanlake-data`; `spanlake run --data DIR` overrides it.
    #[serde(default = "default_path")]
    pub path: PathBuf,
    /// A file is committed once its partition holds about this many rows. Default `131072`.
    #[serde(default = "default_max_rows")]
    pub max_rows_per_file: usize,
    /// A file is committed once its partition's rows take this many bytes in memory (Arrow),
    /// whatever their count: large attributes must not be held for a whole `max_file_age`.
    /// Default `67108864` (64 MiB).
    #[serde(default = "default_max_bytes")]
    pub max_bytes_per_file: usize,
    /// A file is committed at the latest this long after its first row arrived. Default `60s`.
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_file_age: Duration,
    /// Rows per Parquet row group. Default `131072`.
    #[serde(default = "default_row_group")]
    pub row_group_size: usize,
    /// A row group is sealed once its rows take this many bytes in memory as they arrived,
    /// whatever their count: spans of large attributes (the testbed's 20 × 5 KB) would otherwise
    /// wait for `row_group_size` of them. Default `67108864` (64 MiB: above what 131,072 spans
    /// of ~20 short attributes take, so such row groups keep their rows).
    #[serde(default = "default_max_row_group_bytes")]
    pub max_row_group_bytes: usize,
    /// zstd level, 1 (fastest) to 22 (smallest). Default `3`.
    #[serde(default = "default_level")]
    pub compression_level: i32,
    /// The write-ahead log, used when a pipeline of this exporter acknowledges `durable`.
    #[serde(default)]
    pub wal: WalConfig,
}

impl Default for ParquetConfig {
    fn default() -> Self {
        ParquetConfig {
            path: default_path(),
            max_rows_per_file: default_max_rows(),
            max_bytes_per_file: default_max_bytes(),
            max_file_age: default_max_age(),
            row_group_size: default_row_group(),
            max_row_group_bytes: default_max_row_group_bytes(),
            compression_level: default_level(),
            wal: WalConfig::default(),
        }
    }
}

fn default_path() -> PathBuf {
    PathBuf::from("./spanlake-data")
}
fn default_max_rows() -> usize {
    131_072
}
fn default_max_bytes() -> usize {
    64 << 20
}
fn default_max_age() -> Duration {
    Duration::from_secs(60)
}
fn default_row_group() -> usize {
    131_072
}
fn default_max_row_group_bytes() -> usize {
    64 << 20
}

/// zstd's level unless the configuration sets one.
pub(crate) const DEFAULT_LEVEL: i32 = 3;

fn default_level() -> i32 {
    DEFAULT_LEVEL
}

impl ParquetConfig {
    /// Where the write-ahead log lives: `wal.path`, or `<path>/_wal`.
    pub fn wal_dir(&self) -> PathBuf {
        self.wal
            .path
            .clone()
            .unwrap_or_else(|| self.path.join("_wal"))
    }

    /// Every problem with these settings, as `(key, message)`. No I/O.
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if self.path.as_os_str().is_empty() {
            p.push((
                "path",
                "path must name a directory (e.g. ./spanlake-data)".to_string(),
            ));
        }
        if self.max_rows_per_file == 0 {
            p.push((
                "max_rows_per_file",
                "max_rows_per_file must be at least 1".to_string(),
            ));
        }
        if self.max_bytes_per_file < 1 << 20 {
            p.push((
                "max_bytes_per_file",
                "max_bytes_per_file must be at least 1048576 (1 MiB)".to_string(),
            ));
        }
        if self.max_file_age.is_zero() {
            p.push((
                "max_file_age",
                "max_file_age must be above 0 (e.g. 60s)".to_string(),
            ));
        }
        if self.row_group_size == 0 {
            p.push((
                "row_group_size",
                "row_group_size must be at least 1".to_string(),
            ));
        }
        if self.max_row_group_bytes < 64 << 10 {
            p.push((
                "max_row_group_bytes",
                "max_row_group_bytes must be at least 65536 (64 KiB)".to_string(),
            ));
        }
        if !(1..=22).contains(&self.compression_level) {
            p.push((
                "compression_level",
                format!(
                    "compression_level {} is not a zstd level; use 1 to 22",
                    self.compression_level
                ),
            ));
        }
        p.extend(self.wal.validate());
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deserializes_with_defaults() {
        let c: ParquetConfig =
            serde_yaml::from_str("path: /lake\nmax_file_age: 5m\n").expect("valid");
        assert_eq!(c.path, PathBuf::from("/lake"));
        assert_eq!(c.max_file_age, Duration::from_secs(300));
        assert_eq!(c.max_rows_per_file, 131_072);
        assert!(c.validate().is_empty());
        let c: ParquetConfig = serde_yaml::from_str(
            "compression_level: 30\nmax_rows_per_file: 0\nmax_row_group_bytes: 100\n",
        )
        .expect("parses");
        assert_eq!(c.validate().len(), 3);
    }
}
