//! Scheduled snapshots (config `snapshot_schedule`, `snapshot_retention`, `snapshot_target`).
//!
//! The leader names one unit to take them (a started voter, not the raft leader's unit while
//! another one is eligible: the snapshot stream costs the member that serves it). That unit
//! keeps a systemd timer whose job runs this binary's `scheduled-snapshot`: the same archive
//! as the `snapshot` action (etcd's digest verified as it streams, 0600, renamed into place
//! once synced) from its own member, a `.sha256` beside it, then the oldest archives beyond
//! the retention pruned (never the one just written, and only after it was written). The
//! job runs outside any hook, so it talks to etcd and files only; what it did is kept in a
//! record that the unit's hooks turn into status ("last scheduled snapshot 3m ago", or a
//! warning when the last good one is older than two periods).

use crate::config::schedule::{check_target, human, Schedule};
use crate::unit::{read_json, remove_if_present, write_json};
use anyhow::{anyhow, bail, Context as _, Result};
use etcdkit::client::Member;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The unit the leader names to take the scheduled snapshots: the current one while it
/// stays eligible, else the first eligible by name. Eligible: a unit whose member is a
/// started voter; the raft leader's unit only when no other one is.
pub fn choose_taker(
    current: Option<&str>,
    units: &[(String, String)],
    members: &[Member],
    raft_leader: Option<u64>,
) -> Option<String> {
    let voter = |name: &str| members.iter().find(|m| m.name == name && m.is_voter());
    let mut eligible: Vec<(&str, bool)> = units
        .iter()
        .filter_map(|(unit, name)| voter(name).map(|m| (unit.as_str(), Some(m.id) == raft_leader)))
        .collect();
    eligible.sort();
    let spare: Vec<&str> = eligible
        .iter()
        .filter(|(_, leads)| !leads)
        .map(|(u, _)| *u)
        .collect();
    let pool: Vec<&str> = if spare.is_empty() {
        eligible.iter().map(|(u, _)| *u).collect()
    } else {
        spare
    };
    match current {
        Some(c) if pool.contains(&c) => Some(c.to_string()),
        _ => pool.first().map(|u| u.to_string()),
    }
}

/// What the timer's job needs, written by the hook.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub schedule: String,
    pub target: String,
    pub retention: u32,
    /// the schedule's period, for "overdue"
    pub period_secs: u64,
    /// this unit's member's client URL
    pub endpoint: String,
    /// when this unit began taking them (unix seconds)
    pub since: i64,
    /// etcd's data directory here (a snapshot on the same filesystem keeps room for it)
    #[serde(default)]
    pub data_dir: Option<String>,
}

/// What the timer's job did last.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Record {
    pub last_ok: Option<i64>,
    pub last_path: Option<String>,
    pub last_sha256: Option<String>,
    pub last_error: Option<String>,
    pub last_attempt: Option<i64>,
    pub taken: u64,
}

const PLAN: &str = "/var/lib/etcd-charm/snapshot-plan.json";
const RECORD: &str = "/var/lib/etcd-charm/snapshot-record.json";
const UNIT: &str = "etcd-charm-snapshot";

pub fn load_record() -> Result<Record> {
    Ok(read_json(RECORD)?.unwrap_or_default())
}

/// The timer's plan, when this unit takes scheduled snapshots.
pub fn load_plan() -> Result<Option<Plan>> {
    read_json(PLAN)
}

/// The period of `schedule` in seconds; a calendar expression is checked by systemd
/// (`systemd-analyze calendar`), which also says when it elapses next.
pub fn period(schedule: &Schedule) -> Result<u64, String> {
    let expr = match schedule {
        Schedule::Every(s) => return Ok(*s),
        Schedule::Calendar(c) => c,
    };
    let out = Command::new("systemd-analyze")
        .args(["calendar", "--iterations=2", expr])
        .output()
        .map_err(|e| format!("cannot run systemd-analyze to check snapshot_schedule: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "snapshot_schedule {expr:?} is not a systemd calendar expression ({}); use an \
             interval (30m, 6h, 1d) or an expression such as daily or *-*-* 02:00:00",
            etcdkit::last_line(&String::from_utf8_lossy(&out.stderr))
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let times: Vec<i64> = text
        .lines()
        .filter(|l| l.contains("Next elapse:") || l.contains("Iter. #2:"))
        .filter_map(|l| elapse_time(l.split_once(':')?.1))
        .collect();
    match times.as_slice() {
        [a, b] if b > a => Ok((b - a) as u64),
        _ => Err(format!(
            "snapshot_schedule {expr:?} does not repeat (systemd sees no second time): use a \
             repeating expression"
        )),
    }
}

/// `Mon 2026-11-23 00:00:00 UTC` → unix seconds (the zone is systemd's, the same for both
/// times; only their difference is used).
fn elapse_time(s: &str) -> Option<i64> {
    let mut it = s.split_whitespace();
    let (_, date, clock) = (it.next()?, it.next()?, it.next()?);
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::PrimitiveDateTime::parse(&format!("{date} {clock}"), &fmt)
        .ok()
        .map(|t| t.assume_utc().unix_timestamp())
}

/// Makes this unit the one that takes the snapshots: the plan, the timer and its job,
/// reloaded and (re)started only when they changed. Returns the plan in force (it keeps when
/// this unit began, across hooks). Errors are the blocked message.
pub fn ensure(schedule: &Schedule, plan: &Plan, exe: &Path) -> Result<Plan, String> {
    if !hostkit::systemd::systemd_present() {
        return Err(
            "snapshot_schedule needs systemd on the machine (its timer takes the snapshots); \
             unset it here and use the snapshot action"
                .into(),
        );
    }
    check_target(&plan.target)?;
    if !Path::new(&plan.target).is_dir() {
        // Created private; a directory the operator made keeps its mode (the files are 0600).
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&plan.target)
            .map_err(|e| format!("snapshot_target {:?} cannot be created: {e}", plan.target))?;
        // Its snapshots are fetched with `juju scp`, which reads as the ubuntu user.
        crate::pki::give_to_operator(Path::new(&plan.target)).map_err(|e| {
            format!(
                "snapshot_target {:?}: giving it to the ubuntu user: {e}",
                plan.target
            )
        })?;
    }
    tempfile::tempfile_in(&plan.target)
        .map_err(|e| format!("snapshot_target {:?} is not writable: {e}", plan.target))?;
    let old: Option<Plan> = read_json(PLAN).map_err(|e| format!("{e:#}"))?;
    // The same schedule as the plan in force: its start and its period stand (systemd was
    // asked for the period when the schedule came; not again at every hook).
    let same = old.as_ref().filter(|o| o.schedule == plan.schedule);
    let plan = Plan {
        since: same.map_or(plan.since, |o| o.since),
        period_secs: match same {
            Some(o) => o.period_secs,
            None => period(schedule)?,
        },
        ..plan.clone()
    };
    if old.as_ref() != Some(&plan) {
        write_json(PLAN, &plan).map_err(|e| format!("{e:#}"))?;
    }
    hostkit::systemd::ensure(&hostkit::systemd::Job {
        unit: UNIT,
        description: &format!("etcd scheduled snapshots ({})", schedule.describe()),
        exec: format!("{} scheduled-snapshot", exe.display()),
        when: schedule.timer_lines(),
    })?;
    Ok(plan)
}

/// This unit takes no scheduled snapshots (any more): the timer and the bucket's plan go, the
/// records stay.
pub fn remove() -> Result<(), String> {
    hostkit::systemd::remove(UNIT)?;
    remove_if_present(Path::new(PLAN)).map_err(|e| format!("{e:#}"))?;
    // Its uploads go with it (the bucket's plan holds the credentials).
    super::offsite::drop_plan().map_err(|e| format!("{e:#}"))
}

/// This unit's part once the leader named the taker: with `schedule` (this unit takes them)
/// the plan and the timer are in place, and what to publish and say comes back; without,
/// no timer is left here. Errors are the blocked message.
pub fn reconcile_unit(
    schedule: Option<&Schedule>,
    target: &str,
    retention: u32,
    endpoint: &str,
    data_dir: &str,
    offsite: impl FnOnce() -> Result<Option<super::offsite::Offsite>, String>,
) -> Result<Option<(Summary, String)>, String> {
    let Some(schedule) = schedule else {
        remove()?;
        return Ok(None);
    };
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot tell where this charm's binary is: {e}"))?;
    let plan = Plan {
        schedule: schedule.describe(),
        target: target.to_string(),
        retention,
        period_secs: 0, // ensure() asks systemd when the schedule is new
        endpoint: endpoint.to_string(),
        since: (crate::unit::now() as i64),
        data_dir: Some(data_dir.to_string()),
    };
    let plan = ensure(schedule, &plan, &exe)?;
    let rec = load_record().map_err(|e| format!("{e:#}"))?;
    let summary = Summary {
        offsite: offsite()?,
        ..summary(&plan, &rec)
    };
    let (_, note) = note(&summary, crate::unit::now() as i64);
    Ok(Some((summary, note)))
}

/// What the taker publishes of its scheduled snapshots (it changes only when one is taken or
/// fails): the leader's application status is made from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// when this unit began taking them
    pub since: i64,
    pub period_secs: u64,
    pub last_ok: Option<i64>,
    /// why the last attempt failed, when it did
    pub failed: Option<String>,
    /// the copies sent off the machine, when `s3-credentials` is related
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offsite: Option<super::offsite::Offsite>,
}

pub fn summary(plan: &Plan, rec: &Record) -> Summary {
    let failed = super::offsite::last_failure(&rec.last_error, rec.last_attempt, rec.last_ok);
    Summary {
        since: plan.since,
        period_secs: plan.period_secs,
        last_ok: rec.last_ok,
        failed,
        offsite: None,
    }
}

/// What status says of the scheduled snapshots, and whether it is a warning: the last good
/// one's age; overdue when older than two periods (or none in two periods since this unit
/// began taking them); the last failure when the last attempt failed.
pub fn note(s: &Summary, now: i64) -> (bool, String) {
    let every = human(s.period_secs);
    let (since_good, overdue) =
        crate::config::schedule::staleness(s.last_ok, s.since, s.period_secs, now);
    let failed = s
        .failed
        .as_ref()
        .map(|e| format!(" (last attempt failed: {e})"))
        .unwrap_or_default();
    let age = |t: i64| human((now - t).max(0) as u64);
    let text = match (s.last_ok, overdue) {
        (Some(ok), false) => format!("last scheduled snapshot {} ago{failed}", age(ok)),
        (None, false) => format!("first scheduled snapshot due within {every}{failed}"),
        (Some(ok), true) => format!(
            "WARNING: the last good scheduled snapshot is {} old (schedule: every {every}){failed}",
            age(ok)
        ),
        (None, true) => format!(
            "WARNING: no good scheduled snapshot in {} (schedule: every {every}){failed}",
            human(since_good.max(0) as u64)
        ),
    };
    match &s.offsite {
        None => (overdue, text),
        Some(o) => {
            let (warn, more) = o.note(s.since, s.period_secs, now);
            (overdue || warn, format!("{text}; {more}"))
        }
    }
}

/// The timer's job: one snapshot into the target, its digest beside it, the old ones
/// beyond the retention pruned, the record kept. Runs outside any hook.
pub fn run() -> Result<()> {
    let plan: Plan = read_json(PLAN)?.ok_or_else(|| {
        anyhow!("no scheduled snapshot is planned on this unit ({PLAN} is missing)")
    })?;
    let mut rec = load_record()?;
    rec.last_attempt = Some(crate::unit::now() as i64);
    let result = take(&plan);
    match &result {
        Ok((w, _)) => {
            rec.last_ok = rec.last_attempt;
            rec.last_path = Some(w.path.display().to_string());
            rec.last_sha256 = Some(w.sha256.clone());
            rec.last_error = None;
            rec.taken += 1;
        }
        Err(e) => rec.last_error = Some(format!("{e:#}")),
    }
    write_json(RECORD, &rec)?;
    let (w, meta) = result?;
    println!(
        "snapshot {} ({} bytes, sha256 {}) written",
        w.path.display(),
        w.size,
        w.sha256
    );
    for p in prune(Path::new(&plan.target), plan.retention, &w.path)? {
        println!("pruned {}", p.display());
    }
    // Then off the machine, from the archive just written (no second copy on disk).
    super::offsite::after_snapshot(&w.path, &meta)
}

fn take(plan: &Plan) -> Result<(etcdkit::archive::Written, serde_json::Value)> {
    let client = crate::pki::tls_client()?;
    let status = client
        .status(&plan.endpoint)
        .with_context(|| format!("this unit's member at {} does not answer", plan.endpoint))?;
    if !client.health(&plan.endpoint).unwrap_or(false) {
        bail!("this unit's member at {} is not healthy", plan.endpoint);
    }
    let members = client.member_list(&plan.endpoint)?.len();
    let keys = client.count_at(&plan.endpoint, status.header.revision).ok();
    let meta = etcdkit::archive::metadata(&status, members, keys);
    let dir = Path::new(&plan.target);
    // Outside a hook: the data directory is the one the plan was made for.
    crate::unit::ensure_room(
        dir,
        status.db_size,
        plan.data_dir.as_deref().map(Path::new),
        "a scheduled snapshot",
    )?;
    let name = etcdkit::archive::snapshot_name();
    let w = etcdkit::archive::write(&client, &plan.endpoint, dir, &name, &meta)?;
    crate::pki::write_file(
        &dir.join(format!("{name}.tar.gz.sha256")),
        format!("{}  {name}.tar.gz\n", w.sha256).as_bytes(),
        0o600,
    )?;
    Ok((w, meta))
}

/// Removes the oldest `etcd-snapshot-*.tar.gz` (and their `.sha256`) in `dir` beyond the
/// newest `keep`; `newest` (the archive just written and verified) is never removed. Files
/// of other names are left alone.
pub fn prune(dir: &Path, keep: u32, newest: &Path) -> Result<Vec<PathBuf>> {
    prune_by(dir, "etcd-snapshot-", ".tar.gz", keep, newest, false)
}

/// `prune` for files named `<prefix>…<suffix>` whose names do not sort by age (the upgrade
/// snapshots name the version first): the oldest by modification time go.
pub fn prune_named(
    dir: &Path,
    prefix: &str,
    suffix: &str,
    keep: u32,
    newest: &Path,
) -> Result<Vec<PathBuf>> {
    prune_by(dir, prefix, suffix, keep, newest, true)
}

fn prune_by(
    dir: &Path,
    prefix: &str,
    suffix: &str,
    keep: u32,
    newest: &Path,
    by_age: bool,
) -> Result<Vec<PathBuf>> {
    let mut archives: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("reading {}", dir.display()))?
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix))
        })
        .collect();
    if by_age {
        let mut aged = vec![];
        for p in archives {
            let t = std::fs::metadata(&p)
                .and_then(|m| m.modified())
                .with_context(|| format!("reading the age of {}", p.display()))?;
            aged.push((t, p));
        }
        aged.sort();
        archives = aged.into_iter().map(|(_, p)| p).collect();
    } else {
        archives.sort();
    }
    let mut gone = vec![];
    let excess = archives.len().saturating_sub(keep.max(1) as usize);
    for p in archives.into_iter().take(excess) {
        if p == newest {
            continue;
        }
        std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        remove_if_present(&PathBuf::from(format!("{}.sha256", p.display())))?;
        gone.push(p);
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_snapshots_are_pruned_by_age_not_by_name() {
        let d = tempfile::tempdir().unwrap();
        let mk = |n: &str, age: u64| {
            let p = d.path().join(n);
            std::fs::write(&p, "x").unwrap();
            let t = std::time::SystemTime::now() - std::time::Duration::from_secs(age);
            std::fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(t)
                .unwrap();
            p
        };
        // 3.10 sorts before 3.5 by name, but is the newest.
        let oldest = mk("etcd-pre-upgrade-3.5.16-100.db", 300);
        let middle = mk("etcd-pre-upgrade-3.5.30-200.db", 200);
        let newest = mk("etcd-pre-upgrade-3.10.0-300.db", 100);
        let other = mk("notes.txt", 400);
        let gone = prune_named(d.path(), "etcd-pre-upgrade-", ".db", 2, &newest).unwrap();
        assert_eq!(gone, vec![oldest.clone()]);
        assert!(!oldest.exists() && middle.exists() && newest.exists() && other.exists());
    }

    #[test]
    fn schedules_are_intervals_or_calendar_expressions_and_nothing_else() {
        assert_eq!(Schedule::parse(""), Ok(None));
        assert_eq!(Schedule::parse("30m"), Ok(Some(Schedule::Every(1800))));
        assert_eq!(Schedule::parse("1d"), Ok(Some(Schedule::Every(86400))));
        assert_eq!(
            Schedule::parse("*-*-* 02:00:00"),
            Ok(Some(Schedule::Calendar("*-*-* 02:00:00".into())))
        );
        assert!(Schedule::parse("5s").unwrap_err().contains("too short"));
        for bad in ["daily\nExecStart=/bin/sh", "$(reboot)", "every;day", "***"] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_target_is_an_absolute_directory_away_from_etcds_files() {
        assert!(check_target("/var/backups/etcd").is_ok());
        for bad in [
            "backups",
            "/",
            "/var/lib/etcd",
            "/var/lib/etcd/x",
            "/a/../var/lib/etcd",
            "/etc/etcd/",
            // M8: spellings a string comparison let through
            "/var//lib/etcd/snapshots",
            "/var/lib/./etcd",
            "//etc/etcd/x",
        ] {
            assert!(check_target(bad).is_err(), "{bad}");
        }
        // A symbolic link into etcd's files is etcd's files.
        let d = tempfile::tempdir().unwrap();
        let link = d.path().join("lib");
        std::os::unix::fs::symlink("/var/lib", &link).unwrap();
        let t = link.join("etcd/snaps");
        assert!(
            check_target(t.to_str().unwrap()).is_err(),
            "{}",
            t.display()
        );
        let fine = d.path().join("real");
        assert!(check_target(fine.to_str().unwrap()).is_ok());
    }

    fn member(id: u64, name: &str) -> Member {
        serde_json::from_value(serde_json::json!({
            "ID": id.to_string(), "name": name,
            "peerURLs": ["https://10.0.0.1:2380"], "clientURLs": ["https://10.0.0.1:2379"]
        }))
        .unwrap()
    }

    #[test]
    fn the_taker_spares_the_raft_leader_and_stays_put_while_it_can() {
        let units: Vec<(String, String)> = (0..3)
            .map(|i| (format!("etcd/{i}"), format!("etcd{i}")))
            .collect();
        let members: Vec<Member> = (0..3).map(|i| member(i + 1, &format!("etcd{i}"))).collect();
        assert_eq!(
            choose_taker(None, &units, &members, Some(1)).as_deref(),
            Some("etcd/1")
        );
        assert_eq!(
            choose_taker(Some("etcd/2"), &units, &members, Some(1)).as_deref(),
            Some("etcd/2")
        );
        // the current taker became the raft leader: another one takes over
        assert_eq!(
            choose_taker(Some("etcd/1"), &units, &members, Some(2)).as_deref(),
            Some("etcd/0")
        );
        // alone, the raft leader takes them
        assert_eq!(
            choose_taker(None, &units[..1], &members[..1], Some(1)).as_deref(),
            Some("etcd/0")
        );
        // a unit with no started member is not eligible
        assert_eq!(
            choose_taker(Some("etcd/5"), &units, &members[..2], Some(1)).as_deref(),
            Some("etcd/1")
        );
    }

    #[test]
    fn pruning_keeps_the_newest_and_leaves_other_files() {
        let d = tempfile::tempdir().unwrap();
        let names = [
            "etcd-snapshot-2026-01-01-00.00.00",
            "etcd-snapshot-2026-01-02-00.00.00",
            "etcd-snapshot-2026-01-03-00.00.00",
        ];
        for n in names {
            std::fs::write(d.path().join(format!("{n}.tar.gz")), "x").unwrap();
            std::fs::write(d.path().join(format!("{n}.tar.gz.sha256")), "x").unwrap();
        }
        std::fs::write(d.path().join("operator-notes.txt"), "x").unwrap();
        let newest = d.path().join(format!("{}.tar.gz", names[2]));
        let gone = prune(d.path(), 1, &newest).unwrap();
        assert_eq!(gone.len(), 2);
        let mut left: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![
                format!("{}.tar.gz", names[2]),
                format!("{}.tar.gz.sha256", names[2]),
                "operator-notes.txt".into()
            ]
        );
    }

    #[test]
    fn status_says_the_age_and_warns_after_two_periods() {
        let s = |ok: Option<i64>| Summary {
            since: 0,
            period_secs: 3600,
            last_ok: ok,
            failed: None,
            offsite: None,
        };
        assert_eq!(
            note(&s(Some(10_000)), 10_000 + 180),
            (false, "last scheduled snapshot 3m ago".into())
        );
        let (warn, text) = note(&s(Some(10_000)), 10_000 + 7300);
        assert!(warn && text.contains("2h1m old"), "{text}");
        assert!(!note(&s(None), 600).0);
        assert!(note(&s(None), 7300).0);
        let failed = Summary {
            failed: Some("no space".into()),
            ..s(Some(10_000))
        };
        assert!(note(&failed, 10_060)
            .1
            .contains("last attempt failed: no space"));
        // The bucket's side: its own age, its failure named, a warning when it falls behind
        // even while the local snapshots are on time.
        let offsite = |ok: Option<i64>, failed: Option<&str>| Summary {
            offsite: Some(super::super::offsite::Offsite {
                provider: "s3-integrator".into(),
                last_ok: ok,
                failed: failed.map(str::to_string),
                refused: None,
            }),
            ..s(Some(10_000))
        };
        let (warn, text) = note(&offsite(Some(9_900), None), 10_060);
        assert!(
            !warn && text.contains("last off-machine backup 2m ago (s3-credentials s3-integrator)"),
            "{text}"
        );
        let (warn, text) = note(
            &offsite(Some(100), Some("the bucket \"b\" does not exist")),
            10_060,
        );
        assert!(
            warn && text.contains("WARNING: the last off-machine backup is")
                && text.contains("does not exist"),
            "{text}"
        );
        let refused = Summary {
            offsite: Some(super::super::offsite::Offsite {
                provider: String::new(),
                last_ok: None,
                failed: None,
                refused: Some("s3-credentials (x) is refused: bucket".into()),
            }),
            ..s(Some(10_000))
        };
        assert!(note(&refused, 10_060).0);
    }
}
