//! `snapshot_schedule` and `snapshot_target`: when scheduled snapshots are taken and where
//! they are written.

use std::path::Path;

/// When snapshots are taken: every N seconds, or at a systemd calendar expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Every(u64),
    Calendar(String),
}

/// The shortest interval: a snapshot streams the whole database, more often than this is a
/// mistake.
const MIN_INTERVAL: u64 = 10;

impl Schedule {
    /// `""` (off), an interval (`90s`, `30m`, `6h`, `1d`, at least 10s) or a systemd calendar
    /// expression (`daily`, `*-*-* 02:00:00`, `Mon..Fri 03:30`): its characters are checked
    /// here, its meaning by systemd where the timer runs.
    pub fn parse(s: &str) -> Result<Option<Schedule>, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        if let Some(secs) = interval(s) {
            if secs < MIN_INTERVAL {
                return Err(format!(
                    "snapshot_schedule {s:?} is too short: take snapshots at most every {MIN_INTERVAL}s"
                ));
            }
            return Ok(Some(Schedule::Every(secs)));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || " *:-/.,~+".contains(c);
        if s.len() > 100
            || !s.chars().all(allowed)
            || !s
                .chars()
                .any(|c| c.is_ascii_digit() || c.is_ascii_alphabetic())
        {
            return Err(format!(
                "snapshot_schedule {s:?} is neither an interval (30m, 6h, 1d) nor a systemd \
                 calendar expression (daily, *-*-* 02:00:00)"
            ));
        }
        Ok(Some(Schedule::Calendar(s.to_string())))
    }

    pub fn describe(&self) -> String {
        match self {
            Schedule::Every(s) => format!("every {}", human(*s)),
            Schedule::Calendar(c) => format!("at {c}"),
        }
    }

    pub fn timer_lines(&self) -> String {
        match self {
            Schedule::Every(s) => format!("OnActiveSec={s}s\nOnUnitActiveSec={s}s\n"),
            Schedule::Calendar(c) => format!("OnCalendar={c}\nPersistent=true\n"),
        }
    }
}

/// `30s`, `15m`, `6h`, `1d` in seconds.
pub fn interval(s: &str) -> Option<u64> {
    let (num, mult) = super::duration::split_duration(s)?;
    num.parse::<u64>().ok()?.checked_mul(mult as u64)
}

/// How long it has been since the last good run (since `since`, when there was none after
/// it), and whether that is overdue: more than two periods of the schedule.
pub fn staleness(last_ok: Option<i64>, since: i64, period_secs: u64, now: i64) -> (i64, bool) {
    let since_good = now - last_ok.unwrap_or(since).max(since);
    (since_good, since_good > 2 * period_secs as i64)
}

/// A duration as an operator reads it: `45s`, `12m`, `3h10m`, `2d4h`.
pub fn human(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => match (s / 3600, s % 3600 / 60) {
            (h, 0) => format!("{h}h"),
            (h, m) => format!("{h}h{m}m"),
        },
        s => match (s / 86400, s % 86400 / 3600) {
            (d, 0) => format!("{d}d"),
            (d, h) => format!("{d}d{h}h"),
        },
    }
}

/// Checks `snapshot_target`: an absolute directory of its own, never etcd's data.
pub fn check_target(t: &str) -> Result<(), String> {
    let p = Path::new(t);
    let bad = |why: &str| Err(format!("snapshot_target {t:?} {why}"));
    if !p.is_absolute() {
        return bad("must be an absolute path");
    }
    if t.chars().any(|c| c.is_control()) || t.contains("..") {
        return bad("must be a plain path (no .., no control characters)");
    }
    // As the filesystem resolves it: `//`, `.` components and symbolic links in the part
    // that exists (a link into /var/lib/etcd is /var/lib/etcd).
    let norm = resolved(p);
    if norm == Path::new("/") {
        return bad("must not be /");
    }
    for etcd in [etcdkit::DATA_DIR, "/var/snap/etcd", "/etc/etcd"] {
        let etcd_resolved = resolved(Path::new(etcd));
        if norm.starts_with(etcd) || norm.starts_with(&etcd_resolved) {
            return bad(&format!("must be outside etcd's own files ({etcd})"));
        }
    }
    Ok(())
}

/// `p` with its existing part's symbolic links resolved and `.`/`//` dropped; the part
/// that does not exist yet is kept as written.
fn resolved(p: &Path) -> std::path::PathBuf {
    let clean: std::path::PathBuf = p.components().collect();
    let mut existing = clean.clone();
    let mut rest = vec![];
    loop {
        if let Ok(real) = existing.canonicalize() {
            let mut out = real;
            out.extend(rest.iter().rev());
            return out;
        }
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return clean,
        }
    }
}
