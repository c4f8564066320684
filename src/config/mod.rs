//! The charm's configuration: typed, validated where it enters. Pure: no I/O.
//! A bad value becomes one specific message that blocks the unit and changes nothing.

mod ciphers;
pub mod clients;
pub mod duration;
pub mod nagios;
mod ports;
pub mod sans;
pub mod schedule;
pub mod threshold;

pub use ciphers::KNOWN_CIPHERS;
use clients::app_names;
use duration::parse_lifetime;
use ports::{cos_port, ports};
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub port: u16,
    pub management_port: u16,
    pub channel: String,
    pub heartbeat_interval: u32,
    pub election_timeout: u32,
    pub snapshot_count: u64,
    pub bind_to_all_interfaces: bool,
    pub bind_with_insecure_http: bool,
    /// serve the v2 API (3.4 and 3.5 only)
    pub enable_v2: bool,
    pub tls_cipher_suites: Vec<String>,
    pub quota_backend_bytes: u64,
    pub auto_compaction_mode: String,
    pub auto_compaction_retention: String,
    pub archive_url: Option<String>,
    pub archive_sha256: Option<String>,
    /// lifetime of the certificates the leader signs
    pub tls_certificate_lifetime: time::Duration,
    /// names a provider's certificates carry besides the unit's addresses (`{unit}` unfilled)
    pub certificate_extra_sans: Vec<String>,
    /// etcd's loopback metrics listener while related over `cos-agent` (the charm's own
    /// metrics on the next port)
    pub cos_metrics_port: u16,
    /// `etcd-client`: serve on an etcd with known access-control bypasses; whole key space
    pub etcd_client_allow_vulnerable_etcd: bool,
    pub etcd_client_full_access: Vec<String>,
    /// snapd's refresh.timer: "max" (monthly, each unit in its own hour) or a timer
    pub snapd_refresh: String,
    /// where a version upgrade stops for the operator: "none", "first" (after the first
    /// unit is upgraded) or "all" (after each unit); `resume-upgrade` goes on
    pub pause_after_unit_upgrade: PauseAfter,
    /// when scheduled snapshots are taken (None: never)
    pub snapshot_schedule: Option<schedule::Schedule>,
    /// how many scheduled snapshots are kept
    pub snapshot_retention: u32,
    /// where scheduled snapshots are written
    pub snapshot_target: String,
    /// how many of this cluster's backups the `s3-credentials` bucket keeps
    pub s3_retention: u32,
    /// the age recipients backups sent off the machine are encrypted to (empty: none)
    pub backup_age_recipients: Vec<String>,
    /// the URI of the Juju secret holding the age identity for restores from the bucket
    pub backup_age_identity: Option<String>,
    /// when the leader defragments members on its own (None: never)
    pub defrag_threshold: Option<threshold::Threshold>,
    /// what the NRPE checks' Nagios host name starts with (layer:nagios's option)
    pub nagios_context: String,
    /// the Nagios service groups of the checks (empty: the context)
    pub nagios_servicegroups: String,
}

impl Config {
    /// What etcd's own config takes from the charm's.
    pub fn etcd_settings(&self) -> etcdkit::render::Settings {
        etcdkit::render::Settings {
            port: self.port,
            management_port: self.management_port,
            heartbeat_interval: self.heartbeat_interval,
            election_timeout: self.election_timeout,
            snapshot_count: self.snapshot_count,
            quota_backend_bytes: self.quota_backend_bytes,
            auto_compaction_mode: self.auto_compaction_mode.clone(),
            auto_compaction_retention: self.auto_compaction_retention.clone(),
            bind_to_all_interfaces: self.bind_to_all_interfaces,
            bind_with_insecure_http: self.bind_with_insecure_http,
            enable_v2: self.enable_v2,
            tls_cipher_suites: self.tls_cipher_suites.clone(),
            metrics_port: None,
        }
    }
}

/// Where a version upgrade stops for the operator (`pause_after_unit_upgrade`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseAfter {
    None,
    /// after the first unit is upgraded
    First,
    /// after each unit
    All,
}

impl PauseAfter {
    pub fn parse(s: &str) -> Option<PauseAfter> {
        match s {
            "none" => Some(PauseAfter::None),
            "first" => Some(PauseAfter::First),
            "all" => Some(PauseAfter::All),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            PauseAfter::None => "none",
            PauseAfter::First => "first",
            PauseAfter::All => "all",
        }
    }
}

/// The charm's options as `config-get` gives them (config.yaml, one field each), before
/// any is checked: `Config::parse` validates them into typed values. An option this charm
/// does not have is ignored; a value of the wrong type is refused by the check of its option.
#[derive(Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct RawConfig {
    pub port: Option<Value>,
    pub management_port: Option<Value>,
    pub channel: Option<Value>,
    pub heartbeat_interval: Option<Value>,
    pub election_timeout: Option<Value>,
    pub snapshot_count: Option<Value>,
    pub pause_after_unit_upgrade: Option<Value>,
    pub snapshot_schedule: Option<Value>,
    pub snapshot_retention: Option<Value>,
    pub snapshot_target: Option<Value>,
    pub s3_retention: Option<Value>,
    pub backup_age_recipients: Option<Value>,
    pub backup_age_identity: Option<Value>,
    pub defrag_threshold: Option<Value>,
    pub snapd_refresh: Option<Value>,
    pub bind_to_all_interfaces: Option<Value>,
    pub bind_with_insecure_http: Option<Value>,
    pub enable_v2: Option<Value>,
    pub tls_cipher_suites: Option<Value>,
    pub quota_backend_bytes: Option<Value>,
    pub auto_compaction_mode: Option<Value>,
    pub auto_compaction_retention: Option<Value>,
    pub archive_url: Option<Value>,
    pub archive_sha256: Option<Value>,
    pub tls_certificate_lifetime: Option<Value>,
    pub certificate_extra_sans: Option<Value>,
    pub cos_metrics_port: Option<Value>,
    pub etcd_client_allow_vulnerable_etcd: Option<Value>,
    pub etcd_client_full_access: Option<Value>,
    pub nagios_context: Option<Value>,
    pub nagios_servicegroups: Option<Value>,
}

impl RawConfig {
    pub fn from_map(map: &BTreeMap<String, Value>) -> Result<RawConfig, String> {
        let v = Value::Object(map.clone().into_iter().collect());
        serde_json::from_value(v).map_err(|e| format!("invalid config: {e}"))
    }
}

fn get_str(v: &Option<Value>) -> String {
    match v {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// A string option, or `default` when it is empty.
fn get_str_or(v: &Option<Value>, default: &str) -> String {
    Some(get_str(v))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn get_int(v: &Option<Value>, k: &str, default: i64) -> Result<i64, String> {
    match v {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| format!("{k} must be a whole number")),
        Some(Value::String(s)) if s == "auto" => Ok(default),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map_err(|_| format!("{k} must be a whole number, got {s:?}")),
        Some(other) => Err(format!("{k} must be a whole number, got {other}")),
    }
}

fn get_bool(v: &Option<Value>) -> bool {
    matches!(v, Some(Value::Bool(true)))
}

impl Config {
    /// Validates the raw `config-get` map. The error is the blocked status message.
    pub fn parse(map: &BTreeMap<String, Value>) -> Result<Config, String> {
        let raw = RawConfig::from_map(map)?;
        let c = &raw;
        let (port, mport) = ports(
            get_int(&c.port, "port", 2379)?,
            get_int(&c.management_port, "management_port", 2380)?,
            get_bool(&c.bind_with_insecure_http),
        )?;
        let (hb, et, snapshot_count) = timings(c)?;
        let channel = snap_channel(c)?;
        let ciphers = ciphers(c)?;
        let quota = get_int(&c.quota_backend_bytes, "quota_backend_bytes", 0)?;
        if !(0..=8 * 1024 * 1024 * 1024).contains(&quota) {
            return Err(format!("invalid config: quota_backend_bytes {quota} must be between 0 (etcd's 2 GiB default) and 8589934592"));
        }
        let (mode, retention) = compaction(c)?;
        let (url, sha) = archive(c)?;
        let lifetime_raw = get_str_or(&c.tls_certificate_lifetime, "825d");
        let tls_certificate_lifetime = parse_lifetime(&lifetime_raw)
            .ok_or_else(|| format!("invalid config: tls_certificate_lifetime {lifetime_raw:?} must be a number with s, m, h or d, between 60s and 3650d"))?;
        let snapd_refresh = get_str_or(&c.snapd_refresh, "max");
        if let Err(e) = check_refresh_timer(&snapd_refresh) {
            return Err(format!("invalid config: snapd_refresh {snapd_refresh:?}: {e} (use max, or a snapd timer such as fri5,23:00-01:00 or mon,10:00~12:00)"));
        }
        let pause_raw = get_str_or(&c.pause_after_unit_upgrade, "none");
        let pause_after_unit_upgrade = PauseAfter::parse(&pause_raw).ok_or_else(|| {
            format!(
                "invalid config: pause_after_unit_upgrade {pause_raw:?} must be none, first or all"
            )
        })?;
        let (snapshot_schedule, snapshot_retention, snapshot_target) = snapshots(c)?;
        let s3_retention = get_int(&c.s3_retention, "s3_retention", 30)?;
        if !(1..=10000).contains(&s3_retention) {
            return Err(format!(
                "invalid config: s3_retention {s3_retention} must be between 1 and 10000 (how many backups the s3-credentials bucket keeps)"
            ));
        }
        let defrag_threshold = threshold::Threshold::parse(&get_str(&c.defrag_threshold))
            .map_err(|e| format!("invalid config: {e}"))?;
        let (nagios_context, nagios_servicegroups) = nagios_names(c)?;
        Ok(Config {
            nagios_context,
            nagios_servicegroups,
            defrag_threshold,
            snapshot_schedule,
            snapshot_retention: snapshot_retention as u32,
            snapshot_target,
            s3_retention: s3_retention as u32,
            backup_age_recipients: age_recipients(&get_str(&c.backup_age_recipients))?,
            backup_age_identity: Some(get_str(&c.backup_age_identity))
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().to_string()),
            pause_after_unit_upgrade,
            snapd_refresh,
            tls_certificate_lifetime,
            certificate_extra_sans: sans::parse(&get_str(&c.certificate_extra_sans))?,
            etcd_client_allow_vulnerable_etcd: get_bool(&c.etcd_client_allow_vulnerable_etcd),
            etcd_client_full_access: app_names(&get_str(&c.etcd_client_full_access))?,
            cos_metrics_port: cos_port(
                get_int(&c.cos_metrics_port, "cos_metrics_port", 2381)?,
                port,
                mport,
            )?,
            port: port as u16,
            management_port: mport as u16,
            channel,
            heartbeat_interval: hb as u32,
            election_timeout: et as u32,
            snapshot_count: snapshot_count as u64,
            bind_to_all_interfaces: get_bool(&c.bind_to_all_interfaces),
            bind_with_insecure_http: get_bool(&c.bind_with_insecure_http),
            enable_v2: get_bool(&c.enable_v2),
            tls_cipher_suites: ciphers,
            quota_backend_bytes: quota as u64,
            auto_compaction_mode: mode,
            auto_compaction_retention: retention,
            archive_url: url,
            archive_sha256: sha,
        })
    }
}

type Options = RawConfig;

/// `heartbeat_interval`, `election_timeout` (etcd's tuning rules) and `snapshot_count`.
fn timings(c: &Options) -> Result<(i64, i64, i64), String> {
    let hb = get_int(&c.heartbeat_interval, "heartbeat_interval", 100)?;
    let et = get_int(&c.election_timeout, "election_timeout", 1000)?;
    if !(10..=5000).contains(&hb) {
        return Err(format!(
            "invalid config: heartbeat_interval {hb} must be between 10 and 5000 ms"
        ));
    }
    if et < 5 * hb {
        return Err(format!(
            "invalid config: election_timeout {et} must be at least 5 x heartbeat_interval ({})",
            5 * hb
        ));
    }
    if et > 50000 {
        return Err(format!(
            "invalid config: election_timeout {et} must be at most 50000 ms"
        ));
    }
    let snapshot_count = get_int(&c.snapshot_count, "snapshot_count", 10000)?;
    if snapshot_count < 1 {
        return Err(format!(
            "invalid config: snapshot_count {snapshot_count} must be positive"
        ));
    }
    Ok((hb, et, snapshot_count))
}

/// `channel`: `auto` or a snap channel.
fn snap_channel(c: &Options) -> Result<String, String> {
    let channel = get_str_or(&c.channel, "auto");
    if !valid_channel(&channel) {
        return Err(format!("invalid config: channel {channel:?} is not a snap channel (use auto, 3.5/stable, latest/edge, ...)"));
    }
    Ok(channel)
}

/// `tls_cipher_suites`: Go's names, comma-separated.
fn ciphers(c: &Options) -> Result<Vec<String>, String> {
    let ciphers: Vec<String> = get_str(&c.tls_cipher_suites)
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    for cs in &ciphers {
        if !KNOWN_CIPHERS.contains(&cs.as_str()) {
            return Err(format!(
                "invalid config: unknown cipher suite {cs:?} in tls_cipher_suites"
            ));
        }
    }
    Ok(ciphers)
}

/// `auto_compaction_mode` and its `auto_compaction_retention`.
fn compaction(c: &Options) -> Result<(String, String), String> {
    let mode = get_str_or(&c.auto_compaction_mode, "periodic");
    if mode != "periodic" && mode != "revision" {
        return Err(format!(
            "invalid config: auto_compaction_mode {mode:?} must be periodic or revision"
        ));
    }
    let retention = get_str_or(&c.auto_compaction_retention, "1h");
    check_retention(&mode, &retention)
        .map_err(|e| format!("invalid config: auto_compaction_retention {retention:?}: {e}"))?;
    Ok((mode, retention))
}

/// `archive_url` and its `archive_sha256`.
fn archive(c: &Options) -> Result<(Option<String>, Option<String>), String> {
    let url = Some(get_str(&c.archive_url)).filter(|s| !s.is_empty());
    let sha = Some(get_str(&c.archive_sha256).to_lowercase()).filter(|s| !s.is_empty());
    if let Some(s) = &sha {
        if s.len() != 64 || !s.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err("invalid config: archive_sha256 must be 64 hex digits".into());
        }
    }
    if let Some(u) = &url {
        if !(u.starts_with("https://") || u.starts_with("http://")) {
            return Err(format!(
                "invalid config: archive_url {u:?} must be an http(s) URL"
            ));
        }
        if sha.is_none() {
            return Err(
                "invalid config: archive_url needs archive_sha256 (the tarball's sha256)".into(),
            );
        }
    }
    Ok((url, sha))
}

/// `snapshot_schedule`, `snapshot_retention` and `snapshot_target`.
fn snapshots(c: &Options) -> Result<(Option<schedule::Schedule>, i64, String), String> {
    let snapshot_schedule = schedule::Schedule::parse(&get_str(&c.snapshot_schedule))
        .map_err(|e| format!("invalid config: {e}"))?;
    let snapshot_retention = get_int(&c.snapshot_retention, "snapshot_retention", 7)?;
    if !(1..=10000).contains(&snapshot_retention) {
        return Err(format!(
            "invalid config: snapshot_retention {snapshot_retention} must be between 1 and 10000 (how many scheduled snapshots to keep)"
        ));
    }
    let snapshot_target = get_str_or(&c.snapshot_target, "/var/backups/etcd");
    schedule::check_target(&snapshot_target).map_err(|e| format!("invalid config: {e}"))?;
    Ok((snapshot_schedule, snapshot_retention, snapshot_target))
}

/// An age recipient: X25519 (`age1…`, what Debian's age and most tools read; age 0.13 calls
/// it legacy for want of post-quantum safety) or post-quantum hybrid (`age1pq1…`).
#[allow(deprecated)]
pub fn recipient(s: &str) -> Option<Box<dyn age::Recipient + Send>> {
    if let Ok(r) = s.parse::<age::x25519::Recipient>() {
        return Some(Box::new(r));
    }
    s.parse::<age::pq::Recipient>()
        .ok()
        .map(|r| Box::new(r) as Box<dyn age::Recipient + Send>)
}

/// An age identity (X25519 or post-quantum).
#[allow(deprecated)]
pub fn identity(s: &str) -> Option<Box<dyn age::Identity>> {
    if let Ok(i) = s.parse::<age::x25519::Identity>() {
        return Some(Box::new(i));
    }
    s.parse::<age::pq::Identity>()
        .ok()
        .map(|i| Box::new(i) as Box<dyn age::Identity>)
}

/// `backup_age_recipients`: age recipients, each checked by the age crate.
fn age_recipients(text: &str) -> Result<Vec<String>, String> {
    let list: Vec<String> = text
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if list.len() > 20 {
        return Err("invalid config: backup_age_recipients names more than 20 recipients".into());
    }
    for r in &list {
        if recipient(r).is_none() {
            let shown: String = r.chars().filter(|c| !c.is_control()).take(80).collect();
            let hint = if r.starts_with("AGE-SECRET-KEY-") {
                " (that is an identity, a private key: give its public key, age-keygen -y, and keep the identity off the cluster)"
            } else {
                ""
            };
            let shown = if hint.is_empty() {
                shown
            } else {
                "AGE-SECRET-KEY-…".into()
            };
            return Err(format!(
                "invalid config: backup_age_recipients: {shown:?} is not an age recipient (age1…){hint}"
            ));
        }
    }
    Ok(list)
}

/// `nagios_context` and `nagios_servicegroups`.
fn nagios_names(c: &Options) -> Result<(String, String), String> {
    let nagios_context = get_str_or(&c.nagios_context, "juju");
    let nagios_servicegroups = get_str(&c.nagios_servicegroups);
    nagios::check_names("nagios_context", &nagios_context, false)
        .and_then(|_| nagios::check_names("nagios_servicegroups", &nagios_servicegroups, true))
        .map_err(|e| format!("invalid config: {e}"))?;
    Ok((nagios_context, nagios_servicegroups))
}

/// `auto_compaction_retention` as etcd reads it (etcd's parseCompactionRetention, in
/// `embed/etcd.go`): a non-negative whole number (hours in periodic mode, revisions in
/// revision mode), or in periodic mode a Go duration (`30m`, `1h30m`, `1.5h`). In revision
/// mode etcd takes a duration as nanoseconds (`1h` = 3.6e12 revisions: never compacts), so
/// a whole number is required there.
pub fn check_retention(mode: &str, r: &str) -> Result<(), String> {
    if r.bytes().all(|b| b.is_ascii_digit()) && !r.is_empty() {
        return if r.parse::<u64>().is_ok() {
            Ok(())
        } else {
            Err("the number is too large".into())
        };
    }
    if mode == "revision" {
        return Err(
            "in revision mode it is the number of revisions to keep: a whole number such as 1000"
                .into(),
        );
    }
    if go_duration(r) {
        Ok(())
    } else {
        Err("etcd cannot read it: use a whole number of hours (1) or a duration such as 30m, 1h30m or 1.5h".into())
    }
}

/// A non-negative Go duration (Go's time.ParseDuration): one or more `<number><unit>`,
/// the number with an optional fraction, units ns, us, µs, ms, s, m, h; or `0`.
fn go_duration(s: &str) -> bool {
    if s == "0" {
        return true;
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.is_empty() || s.len() > 64 {
        return false;
    }
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..digits];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ns", "us", "\u{b5}s", "\u{3bc}s", "ms", "s", "m", "h"]
            .into_iter()
            .filter(|u| rest.starts_with(u))
            .max_by_key(|u| u.len());
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

/// Checks a snapd timer (snapd's "timer strings": comma-separated days, day ranges,
/// times, time ranges with `-` or a spread with `~`, and `/N` repeats), or "max".
pub fn check_refresh_timer(t: &str) -> Result<(), String> {
    if t == "max" {
        return Ok(());
    }
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let day = |d: &str| -> bool {
        // `get`: byte 3 may fall inside a multi-byte character (then it is no day).
        let (Some(name), Some(week)) = (d.get(..d.len().min(3)), d.get(d.len().min(3)..)) else {
            return false;
        };
        DAYS.contains(&name) && (week.is_empty() || matches!(week, "1" | "2" | "3" | "4" | "5"))
    };
    let time = |t: &str| -> bool {
        match t.split_once(':') {
            Some((h, m)) => {
                h.len() <= 2
                    && m.len() == 2
                    && h.parse::<u32>().is_ok_and(|h| h < 24)
                    && m.parse::<u32>().is_ok_and(|m| m < 60)
            }
            None => false,
        }
    };
    for event in t.split(',') {
        let (span, repeat) = match event.split_once('/') {
            Some((a, n)) => (a, Some(n)),
            None => (event, None),
        };
        if let Some(n) = repeat {
            if !n.parse::<u32>().is_ok_and(|n| n > 0) {
                return Err(format!(
                    "{event:?}: the repeat /{n} must be a positive number"
                ));
            }
        }
        let parts: Vec<&str> = span.split(['-', '~']).collect();
        let ok = match parts.as_slice() {
            [one] => day(one) || time(one),
            [a, b] => (day(a) && day(b)) || (time(a) && time(b)),
            _ => false,
        };
        if !ok {
            return Err(format!(
                "{event:?} is not a day (mon..sun, fri5), a time (23:00) or a range of either"
            ));
        }
    }
    Ok(())
}

/// `auto`, `<track>/<risk>[/<branch>]`, `<risk>` or `<track>`.
pub fn valid_channel(ch: &str) -> bool {
    if ch == "auto" {
        return true;
    }
    let parts: Vec<&str> = ch.split('/').collect();
    let risks = ["stable", "candidate", "beta", "edge"];
    let track_ok = |t: &str| {
        !t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    };
    match parts.as_slice() {
        [one] => track_ok(one),
        [t, r] => track_ok(t) && risks.contains(r),
        [t, r, b] => track_ok(t) && risks.contains(r) && track_ok(b),
        _ => false,
    }
}

#[cfg(test)]
mod tests {

    /// RawConfig has a field for each option of config.yaml, and no other.
    #[test]
    fn the_raw_config_has_every_option_of_config_yaml() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.yaml")).unwrap();
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let mut options: Vec<String> = yaml["options"]
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        let mut fields: Vec<String> = match serde_json::to_value(RawConfig::default()).unwrap() {
            Value::Object(m) => m.keys().cloned().collect(),
            _ => unreachable!(),
        };
        options.sort();
        fields.sort();
        assert_eq!(fields, options);
    }
    use super::*;
    use serde_json::json;

    fn cfg(v: Value) -> Result<Config, String> {
        Config::parse(&serde_json::from_value(v).unwrap())
    }

    /// The golden files of etcd's config (etcdkit's render tests) use `Settings::default()`:
    /// they show what the charm's defaults render only while the two agree.
    #[test]
    fn the_charms_defaults_are_etcds_default_settings() {
        let c = cfg(json!({})).unwrap();
        assert_eq!(c.etcd_settings(), etcdkit::render::Settings::default());
        let c = cfg(
            json!({"port": 12379, "tls_cipher_suites": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"}),
        )
        .unwrap();
        let s = c.etcd_settings();
        assert_eq!((s.port, s.tls_cipher_suites.len()), (12379, 1));
    }

    #[test]
    fn defaults_are_valid() {
        let c = cfg(json!({})).unwrap();
        assert_eq!(
            (
                c.port,
                c.management_port,
                c.heartbeat_interval,
                c.election_timeout
            ),
            (2379, 2380, 100, 1000)
        );
        assert_eq!(c.channel, "auto");
    }

    #[test]
    fn rejects_bad_values_with_specific_messages() {
        assert!(cfg(json!({"pause_after_unit_upgrade": "sometimes"}))
            .unwrap_err()
            .contains("must be none, first or all"));
        assert!(cfg(json!({"port": 70000}))
            .unwrap_err()
            .contains("port 70000 is out of range"));
        assert!(cfg(json!({"port": 2380}))
            .unwrap_err()
            .contains("both 2380"));
        assert!(
            cfg(json!({"heartbeat_interval": 300, "election_timeout": 1000}))
                .unwrap_err()
                .contains("at least 5 x heartbeat_interval")
        );
        assert!(cfg(json!({"tls_cipher_suites": "TLS_NOPE"}))
            .unwrap_err()
            .contains("unknown cipher suite \"TLS_NOPE\""));
        assert!(cfg(json!({"channel": "3.5/sideways"}))
            .unwrap_err()
            .contains("channel"));
        assert!(cfg(json!({"archive_url": "https://x/etcd.tgz"}))
            .unwrap_err()
            .contains("archive_sha256"));
        assert!(cfg(json!({"archive_sha256": "abc"}))
            .unwrap_err()
            .contains("64 hex"));
    }

    #[test]
    fn retention_as_etcd_reads_it() {
        for (mode, ok) in [
            ("periodic", "1h"),
            ("periodic", "30m"),
            ("periodic", "1h30m"),
            ("periodic", "1.5h"),
            ("periodic", "500ms"),
            ("periodic", "0"),
            ("periodic", "12"),
            ("revision", "1000"),
            ("revision", "0"),
        ] {
            assert!(check_retention(mode, ok).is_ok(), "{mode} {ok}");
        }
        for (mode, bad) in [
            ("periodic", "banana"),
            ("periodic", "-1"),
            ("periodic", "1x"),
            ("periodic", ""),
            ("periodic", "h"),
            ("periodic", "1.2.3h"),
            ("periodic", "30д"),
            ("revision", "1h"),
            ("revision", "-5"),
            ("revision", "99999999999999999999999"),
        ] {
            assert!(check_retention(mode, bad).is_err(), "{mode} {bad}");
        }
        let e = cfg(json!({"auto_compaction_retention": "banana"})).unwrap_err();
        assert!(e.contains("auto_compaction_retention \"banana\""), "{e}");
        assert!(cfg(
            json!({"auto_compaction_mode": "revision", "auto_compaction_retention": "1h"})
        )
        .is_err());
        let e = cfg(json!({"bind_with_insecure_http": true, "management_port": 4001})).unwrap_err();
        assert!(e.contains("management_port 4001"), "{e}");
    }

    /// H3: a value whose last character, or whose third byte, falls inside a multi-byte
    /// character was split there and panicked every hook.
    #[test]
    fn non_ascii_values_are_refused_not_panicked_on() {
        for (k, v) in [
            ("tls_certificate_lifetime", "30д"),
            ("snapshot_schedule", "30д"),
            ("snapd_refresh", "moд,10:00"),
            ("snapd_refresh", "дд"),
            ("auto_compaction_retention", "1ч"),
        ] {
            let e = cfg(json!({ k: v })).unwrap_err();
            assert!(e.contains(k), "{k}={v}: {e}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Every option the charm declares (config.yaml), with its type.
        fn options() -> Vec<(String, String)> {
            let y: serde_yaml::Value =
                serde_yaml::from_str(include_str!("../../config.yaml")).unwrap();
            y["options"]
                .as_mapping()
                .unwrap()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().unwrap().to_string(),
                        v["type"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        }

        fn value_for(kind: &str) -> BoxedStrategy<Value> {
            match kind {
                "int" => prop_oneof![
                    any::<i64>().prop_map(|n| json!(n)),
                    (-10i64..70000).prop_map(|n| json!(n)),
                ]
                .boxed(),
                "boolean" => any::<bool>().prop_map(|b| json!(b)).boxed(),
                _ => prop_oneof![
                    any::<String>().prop_map(Value::String),
                    "[0-9]{0,4}[a-zд-я.:,~/*-]{0,4}".prop_map(Value::String),
                    "\\PC{0,300}".prop_map(Value::String),
                ]
                .boxed(),
            }
        }

        /// One option with a value of its type (or, now and then, of another type).
        fn option_value() -> impl Strategy<Value = (String, Value)> {
            let opts = options();
            (0..opts.len(), any::<bool>()).prop_flat_map(move |(i, other)| {
                let (k, kind) = opts[i].clone();
                let kind = if other { "string".to_string() } else { kind };
                value_for(&kind).prop_map(move |v| (k.clone(), v))
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]
            /// Any value of any option, several at once: parse answers Ok or an error that
            /// names an option, and never panics.
            #[test]
            fn config_parse_never_panics(values in proptest::collection::vec(option_value(), 1..6)) {
                let map: BTreeMap<String, Value> = values.into_iter().collect();
                if let Err(e) = Config::parse(&map) {
                    prop_assert!(map.keys().any(|k| e.contains(k.as_str())), "names no option: {}", e);
                }
            }

            #[test]
            fn durations_and_timers_never_panic(s in "\\PC{0,40}") {
                let _ = super::duration::split_duration(&s);
                let _ = parse_lifetime(&s);
                let _ = check_refresh_timer(&s);
                let _ = check_retention("periodic", &s);
                let _ = check_retention("revision", &s);
                let _ = schedule::Schedule::parse(&s);
            }
        }
    }

    #[test]
    fn channels() {
        for ok in ["auto", "3.5/stable", "latest/edge", "stable", "3.4"] {
            assert!(valid_channel(ok), "{ok}");
        }
        for bad in ["", "3.5/nope", "a/b/c/d", "3.5 /stable"] {
            assert!(!valid_channel(bad), "{bad}");
        }
    }

    #[test]
    fn snapd_refresh_timers() {
        for good in [
            "max",
            "fri5",
            "fri5,23:00-01:00",
            "mon,10:00~12:00",
            "mon-fri,4:00",
            "00:00-23:00/4",
        ] {
            assert_eq!(check_refresh_timer(good), Ok(()), "{good}");
        }
        for bad in [
            "", "never", "fri6", "25:00", "mon,", "10:00-", "mon/0", "monthly",
        ] {
            assert!(check_refresh_timer(bad).is_err(), "{bad}");
        }
        let mut c = BTreeMap::new();
        c.insert("snapd_refresh".to_string(), Value::String("someday".into()));
        let e = Config::parse(&c).unwrap_err();
        assert!(e.contains("snapd_refresh") && e.contains("someday"), "{e}");
    }
}
