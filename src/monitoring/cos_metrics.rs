//! The charm's own metrics, in Prometheus' text format, and the per-connection server the
//! metrics listener runs (`etcd-charm serve-metrics`, stdin and stdout the connection).

use crate::ops::defrag::Outcome;
use crate::pki;
use anyhow::Result;
use hostkit::fs::read_if_present;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::io::{BufRead, Read as _, Write};

const DEFRAG_RECORD: &str = "/var/lib/etcd-charm/defrag-record.json";
/// The certificate files whose expiry is exported (a bundle: its soonest).
const CERT_FILES: &[&str] = &[
    "server.crt",
    "client.crt",
    "peer.crt",
    "ca.crt",
    "peer-ca.crt",
];

/// What the leader's automatic defragmentation came to, over time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DefragRecord {
    pub last_ok: Option<i64>,
    pub last_failure: Option<i64>,
    /// since when members past the threshold wait (None: none wait)
    pub pending_since: Option<i64>,
}

impl DefragRecord {
    /// The record after a pass at `now`. Pure.
    pub fn after(mut self, outcome: Outcome, now: i64) -> DefragRecord {
        match outcome {
            Outcome::Clean => self.pending_since = None,
            Outcome::Done => {
                self.last_ok = Some(now);
                self.pending_since = None;
            }
            Outcome::Waiting => {
                self.pending_since.get_or_insert(now);
            }
            Outcome::Failed => {
                self.last_failure = Some(now);
                self.pending_since.get_or_insert(now);
            }
        }
        self
    }
}

/// Keeps the leader's defragmentation record (written only when it changes).
pub fn record_defrag(outcome: Outcome) -> Result<()> {
    let old: DefragRecord = crate::unit::read_json(DEFRAG_RECORD)?.unwrap_or_default();
    let new = old.clone().after(outcome, crate::unit::now() as i64);
    if new != old {
        crate::unit::write_json(DEFRAG_RECORD, &new)?;
    }
    Ok(())
}

/// One gauge: its HELP and TYPE lines, then each sample (label text, value).
fn gauge(out: &mut String, name: &str, help: &str, samples: &[(String, f64)]) {
    if samples.is_empty() {
        return;
    }
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (labels, v) in samples {
        let _ = writeln!(out, "{name}{labels} {v}"); // to a String: cannot fail
    }
}

fn one(v: Option<i64>) -> Vec<(String, f64)> {
    v.map(|v| (String::new(), v as f64)).into_iter().collect()
}

/// The soonest expiry of the certificates in a PEM file.
fn expiry(pem: &str) -> Option<i64> {
    pki::authority::split(pem)
        .iter()
        .filter_map(|c| pki::not_after(c).ok())
        .min()
}

/// The charm's metrics now: what the files of this unit say. A file that cannot be read is
/// counted in `etcd_charm_read_errors` and named on stderr (the journal), not fatal.
pub fn charm_metrics() -> String {
    let mut out = String::new();
    let mut errors = 0u32;
    let mut note = |what: &str, e: anyhow::Error| {
        errors += 1;
        eprintln!("etcd charm metrics: {what}: {e:#}");
    };
    gauge(
        &mut out,
        "etcd_charm_up",
        "The charm's metrics answered.",
        &one(Some(1)),
    );
    let mut certs = vec![];
    for f in CERT_FILES {
        match read_if_present(&pki::path(f)) {
            Ok(Some(pem)) => {
                certs.extend(expiry(&pem).map(|t| (format!("{{file=\"{f}\"}}"), t as f64)))
            }
            Ok(None) => {}
            Err(e) => note(f, e),
        }
    }
    gauge(
        &mut out,
        "etcd_charm_certificate_expiry_timestamp_seconds",
        "When the soonest certificate in the file expires (unix seconds).",
        &certs,
    );
    match crate::jobs::snapshots::load_plan() {
        Ok(Some(plan)) => {
            gauge(
                &mut out,
                "etcd_charm_snapshot_period_seconds",
                "The period of snapshot_schedule on the unit that takes them.",
                &one(Some(plan.period_secs as i64)),
            );
            gauge(
                &mut out,
                "etcd_charm_snapshot_schedule_since_timestamp_seconds",
                "When this unit began taking the scheduled snapshots.",
                &one(Some(plan.since)),
            );
        }
        Ok(None) => {}
        Err(e) => note("the snapshot plan", e),
    }
    match crate::jobs::snapshots::load_record() {
        Ok(r) => gauge(
            &mut out,
            "etcd_charm_snapshot_last_success_timestamp_seconds",
            "When the last scheduled snapshot was written and checked.",
            &one(r.last_ok),
        ),
        Err(e) => note("the snapshot record", e),
    }
    match crate::jobs::offsite::load_plan() {
        Ok(p) => gauge(
            &mut out,
            "etcd_charm_offsite_related",
            "1 while this unit uploads its scheduled snapshots to an s3-credentials bucket.",
            &one(Some(p.is_some() as i64)),
        ),
        Err(e) => note("the off-machine plan", e),
    }
    match crate::jobs::offsite::load_record() {
        Ok(r) => gauge(
            &mut out,
            "etcd_charm_offsite_last_success_timestamp_seconds",
            "When the last upload was read back whole from the bucket.",
            &one(r.last_ok),
        ),
        Err(e) => note("the off-machine record", e),
    }
    match crate::unit::read_json::<DefragRecord>(DEFRAG_RECORD) {
        Ok(Some(r)) => {
            gauge(&mut out, "etcd_charm_defrag_last_success_timestamp_seconds", "When the leader's automatic defragmentation last finished every member past defrag_threshold.", &one(r.last_ok));
            gauge(
                &mut out,
                "etcd_charm_defrag_last_failure_timestamp_seconds",
                "When it last failed.",
                &one(r.last_failure),
            );
            gauge(
                &mut out,
                "etcd_charm_defrag_pending_since_timestamp_seconds",
                "Since when members past defrag_threshold wait.",
                &one(r.pending_since),
            );
        }
        Ok(None) => {}
        Err(e) => note("the defragmentation record", e),
    }
    gauge(
        &mut out,
        "etcd_charm_read_errors",
        "Files of the charm these metrics could not read (named in the journal).",
        &one(Some(errors as i64)),
    );
    out
}

/// Answers one HTTP request on stdin/stdout: GET /metrics (or /) with the charm's metrics,
/// anything else 404. The request head is read to its end (at most 8 KiB).
pub fn serve() -> Result<()> {
    let stdin = std::io::stdin();
    let mut head = stdin.lock().take(8 << 10);
    let mut first = String::new();
    head.read_line(&mut first)?;
    let mut line = String::new();
    while head.read_line(&mut line)? > 0 && line.trim_end() != "" {
        line.clear();
    }
    let path = first.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = if first.starts_with("GET ") && (path == "/metrics" || path == "/") {
        ("200 OK", charm_metrics())
    } else {
        (
            "404 Not Found",
            "not found: the charm's metrics are at /metrics\n".to_string(),
        )
    };
    let mut out = std::io::stdout().lock();
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    out.flush()?;
    Ok(())
}
