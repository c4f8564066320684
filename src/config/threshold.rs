//! `defrag_threshold`: when a member is worth defragmenting.

use etcdkit::client::Status;

/// When a member is worth defragmenting: at least `percent` of its database file is free
/// pages, and the file is at least `min_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold {
    pub percent: u64,
    pub min_bytes: u64,
}

/// The size below which defragmenting is not worth an interruption, unless the config says.
const DEFAULT_MIN: u64 = 100 << 20;

impl Threshold {
    /// `""` (off), `50%` (and at least 100 MiB), or `50%,16MiB` (KiB, MiB, GiB).
    pub fn parse(s: &str) -> Result<Option<Threshold>, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        let bad = || {
            format!(
                "defrag_threshold {s:?} must be a percentage of free space in the database \
                 file, optionally with a minimum file size: 50% or 50%,256MiB"
            )
        };
        let (pct, min) = match s.split_once(',') {
            Some((p, m)) => (p.trim(), Some(m.trim())),
            None => (s, None),
        };
        let percent: u64 = pct
            .strip_suffix('%')
            .and_then(|p| p.trim().parse().ok())
            .filter(|p| (1..=99).contains(p))
            .ok_or_else(bad)?;
        let min_bytes = match min {
            None => DEFAULT_MIN,
            Some(m) => {
                let (num, unit) = m
                    .find(|c: char| !c.is_ascii_digit())
                    .map(|i| m.split_at(i))
                    .ok_or_else(bad)?;
                let n: u64 = num.parse().map_err(|_| bad())?;
                let mult = match unit {
                    "KiB" => 1u64 << 10,
                    "MiB" => 1 << 20,
                    "GiB" => 1 << 30,
                    _ => return Err(bad()),
                };
                n.checked_mul(mult).ok_or_else(bad)?
            }
        };
        Ok(Some(Threshold { percent, min_bytes }))
    }

    pub fn exceeded_by(&self, s: &Status) -> bool {
        s.db_size >= self.min_bytes
            && s.db_size_in_use > 0
            && (s.db_size.saturating_sub(s.db_size_in_use)) * 100 >= self.percent * s.db_size
    }
}
