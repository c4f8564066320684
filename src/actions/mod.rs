//! The actions, with the classic charm's names, params and result keys (anchor-charms §4.4).
//! Bad params fail the action with a message that says what is wrong, before anything changes.

pub mod backups;
pub mod copy_from;
pub mod install;
pub mod name;
pub mod recover;
pub mod restore;
pub mod snap_upgrade;
pub mod support;
pub mod upgrade;
pub mod verify;

use crate::actions::support::{
    leader_endpoint, local, param_bool, param_str, refuse, writable_dir, Refused, Results,
};
use crate::juju::{self, Context};
use crate::pki;
use crate::unit;
use anyhow::{anyhow, Context as _, Result};
use etcdkit::client::Member;
use etcdkit::install::Installed;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub fn run(ctx: &Context) -> Result<()> {
    let name = ctx.action.clone().unwrap_or_default();
    let params = juju::action_params()?;
    if crate::ops::classic::untaken()? {
        return juju::action_fail(crate::hook::takeover::NOT_YET).map_err(Into::into);
    }
    if let crate::ops::claim::Claim::Taken(other) = crate::ops::claim::claim(&ctx.unit)? {
        return juju::action_fail(&format!(
            "etcd unit {other} is deployed on this machine: this unit runs nothing here \
             (run the action on {other})"
        ))
        .map_err(Into::into);
    }
    crate::ops::check_local_files()?;
    crate::ops::finish_interrupted()?;
    let Some(action) = name::Action::parse(&name) else {
        return juju::action_fail(&format!("unknown action {name:?}")).map_err(Into::into);
    };
    let r = dispatch(ctx, action, &params);
    // The action's outcome stands whatever the status says; a status that cannot be set is
    // logged, and the next hook sets it.
    if let Err(e) = crate::actions::support::report_member() {
        juju::log(
            "WARNING",
            &format!("cannot report the member's health after {name}: {e:#}"),
        );
    }
    match r {
        Ok(results) => juju::action_set(&results).map_err(Into::into),
        Err(e) => {
            let msg = match e.downcast_ref::<Refused>() {
                Some(r) => r.0.clone(),
                None => format!("{e:#}"),
            };
            juju::action_fail(&msg)?;
            Ok(())
        }
    }
}

fn dispatch(
    ctx: &Context,
    action: name::Action,
    params: &std::collections::BTreeMap<String, Value>,
) -> Result<Results> {
    use name::Action as A;
    match action {
        A::Health => health(),
        A::PackageClientCredentials => package_client_credentials(ctx),
        A::Snapshot => snapshot(ctx, params),
        A::Restore => restore::restore(ctx, params),
        A::Recover => recover::recover(ctx, params),
        A::Compact => compact(params),
        A::Defrag => defrag(params),
        A::CopyFrom => copy_from::copy_from(params),
        A::AlarmList => alarm_list(),
        A::AlarmDisarm => alarm_disarm(),
        A::Install => install::reinstall(ctx),
        A::SnapUpgrade => snap_upgrade::snap_upgrade(ctx, params),
        A::PreUpgradeCheck => upgrade::pre_upgrade_check(params),
        A::ResumeUpgrade => upgrade::resume_upgrade(ctx),
        A::UpgradePackage => upgrade::upgrade_package(ctx, params),
        A::ListBackups => backups::list_backups(),
        A::VerifyBackup => verify::verify_backup(params),
    }
}

fn health() -> Result<Results> {
    let (client, ep, _) = local()?;
    let members = client.member_list(&ep)?;
    let mut lines = vec![];
    let mut res = vec![];
    let mut all = true;
    for m in &members {
        let key = if m.name.is_empty() {
            format!("{:x}", m.id)
        } else {
            m.name.clone()
        };
        let Some(url) = m.client_url() else {
            all = false;
            lines.push(format!(
                "member {:x} is unhealthy: it has not started",
                m.id
            ));
            res.push((format!("members.{key}.healthy"), "false".into()));
            res.push((format!("members.{key}.error"), "not started".into()));
            continue;
        };
        let healthy = client.health(&url);
        let status = client.status(&url);
        res.push((format!("members.{key}.endpoint"), url.clone()));
        res.push((format!("members.{key}.learner"), m.is_learner.to_string()));
        match (&healthy, &status) {
            (Ok(true), Ok(s)) => {
                lines.push(format!(
                    "member {:x} is healthy: got healthy result from {url}",
                    m.id
                ));
                res.push((format!("members.{key}.healthy"), "true".into()));
                res.push((
                    format!("members.{key}.leader"),
                    (s.leader == m.id).to_string(),
                ));
                res.push((format!("members.{key}.db-size"), s.db_size.to_string()));
                res.push((
                    format!("members.{key}.raft-index"),
                    s.raft_index.to_string(),
                ));
                res.push((format!("members.{key}.version"), s.version.clone()));
            }
            _ => {
                all = false;
                let err = match (healthy, status) {
                    (Err(e), _) => e.to_string(),
                    (_, Err(e)) => e.to_string(),
                    _ => "health check returned false".into(),
                };
                lines.push(format!(
                    "member {:x} is unhealthy: got unhealthy result from {url}: {err}",
                    m.id
                ));
                res.push((format!("members.{key}.healthy"), "false".into()));
                res.push((format!("members.{key}.error"), err));
            }
        }
    }
    let versions: std::collections::BTreeSet<&str> = res
        .iter()
        .filter(|(k, _)| k.ends_with(".version"))
        .map(|(_, v)| v.as_str())
        .collect();
    if versions.len() > 1 {
        let mixed = versions.into_iter().collect::<Vec<_>>().join(", ");
        lines.push(format!("members run different etcd versions: {mixed}"));
        res.push(("mixed-versions".into(), mixed));
    }
    lines.push(if all {
        "cluster is healthy".into()
    } else {
        "cluster is unhealthy".into()
    });
    res.push(("output".into(), lines.join("\n")));
    res.push(("healthy".into(), all.to_string()));
    Ok(res)
}

/// Where archives for the operator go: /home/ubuntu when it exists, else /root.
fn operator_dir() -> PathBuf {
    if Path::new("/home/ubuntu").is_dir() {
        PathBuf::from("/home/ubuntu")
    } else {
        PathBuf::from("/root")
    }
}

/// The credentials package's README (pure).
pub fn credentials_readme(endpoints: &[String]) -> String {
    let eps = endpoints.join(",");
    format!(
        "etcd client credentials\n=======================\n\nUnpack this archive, then from the directory that holds etcd_credentials/:\n\n# etcdctl 3.4 and later (API v3)\nexport ETCDCTL_API=3\nexport ETCDCTL_ENDPOINTS={eps}\nexport ETCDCTL_CACERT=$PWD/etcd_credentials/ca.crt\nexport ETCDCTL_CERT=$PWD/etcd_credentials/client.crt\nexport ETCDCTL_KEY=$PWD/etcd_credentials/client.key\n\n# older etcdctl (v2 variable names)\nexport ETCDCTL_CA_FILE=$PWD/etcd_credentials/ca.crt\nexport ETCDCTL_CERT_FILE=$PWD/etcd_credentials/client.crt\nexport ETCDCTL_KEY_FILE=$PWD/etcd_credentials/client.key\n\netcdctl member list\netcdctl put greeting hello && etcdctl get greeting\n\nEndpoints:\n{}\n",
        endpoints.iter().map(|e| format!("  {e}\n")).collect::<String>()
    )
}

fn tar_gz_private(path: &Path, entries: &[(String, Vec<u8>, u32)]) -> Result<()> {
    let tmp = path.with_extension("part");
    let f = pki::create_operator_file(&tmp)?;
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        f,
        flate2::Compression::default(),
    ));
    for (name, data, mode) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_mtime(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        );
        h.set_cksum();
        b.append_data(&mut h, name, data.as_slice())?;
    }
    b.into_inner()?.finish()?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn package_client_credentials(ctx: &Context) -> Result<Results> {
    let (client, ep, _) = local()?;
    let mut endpoints: Vec<String> = client
        .member_list(&ep)?
        .iter()
        .filter_map(Member::client_url)
        .collect();
    endpoints.sort();
    let read = |f: &str| {
        std::fs::read(pki::path(f)).with_context(|| format!("reading {f}; is the unit certified?"))
    };
    let entries = vec![
        (
            "etcd_credentials/ca.crt".to_string(),
            read("ca.crt")?,
            0o644,
        ),
        (
            "etcd_credentials/client.crt".to_string(),
            read("client.crt")?,
            0o644,
        ),
        (
            "etcd_credentials/client.key".to_string(),
            read("client.key")?,
            0o600,
        ),
        (
            "etcd_credentials/README.txt".to_string(),
            credentials_readme(&endpoints).into_bytes(),
            0o644,
        ),
    ];
    let path = operator_dir().join("etcd_credentials.tar.gz");
    tar_gz_private(&path, &entries)?;
    let sha = etcdkit::install::sha256_file(&path)?;
    Ok(vec![
        ("path".into(), path.display().to_string()),
        ("sha256".into(), sha),
        (
            "copy.cmd".into(),
            format!("juju scp {}:{} .", ctx.unit, path.display()),
        ),
    ])
}

fn snapshot(ctx: &Context, params: &std::collections::BTreeMap<String, Value>) -> Result<Results> {
    let keys = param_str(params, "keys-version", "v3");
    if keys != "v3" && keys != "v2" {
        return refuse(format!("keys-version {keys:?} is not valid: use v3 or v2"));
    }
    let target = writable_dir(
        param_str(params, "target", "/home/ubuntu/etcd-snapshots"),
        "target",
    )?;
    let (client, ep, cfg) = local()?;
    let inst = Installed::load().ok_or_else(|| anyhow!("etcd is not installed"))?;
    let name = etcdkit::archive::snapshot_name();
    let upload = param_bool(params, "upload", false);
    if keys == "v2" {
        if upload {
            return refuse("upload=true takes v3 snapshots only (keys-version=v3)");
        }
        return snapshot_v2(ctx, &inst, &target, &name);
    }
    // The bucket is checked before the snapshot is taken: a missing relation is said now.
    let bucket = upload.then(backups::bucket).transpose()?;
    let (leader_ep, _) = leader_endpoint(&client, &ep)?;
    let status = client.status(&leader_ep)?;
    let data = unit::data_dir(false)?;
    if let Err(e) = unit::ensure_room(
        &target,
        status.db_size,
        Some(Path::new(&data)),
        "the snapshot",
    ) {
        return refuse(format!("{e:#}"));
    }
    let members = client.member_list(&ep)?.len();
    let keys = client.count_at(&leader_ep, status.header.revision).ok();
    let meta = etcdkit::archive::metadata(&status, members, keys);
    juju::action_log(&format!("streaming a snapshot from the leader {leader_ep}"));
    let etcdkit::archive::Written {
        path,
        size,
        db_size,
        sha256: sha,
    } = etcdkit::archive::write(&client, &leader_ep, &target, &name, &meta)?;
    juju::action_log(&format!(
        "snapshot of {db_size} bytes written to {}",
        path.display()
    ));
    let uploaded = match &bucket {
        Some((store, name)) => {
            backups::upload(ctx, store, name, &path, &meta, &cfg.backup_age_recipients)?
        }
        None => vec![],
    };
    Ok([uploaded, snapshot_results(ctx, &path, size, sha, &status)].concat())
}

fn snapshot_results(
    ctx: &Context,
    path: &Path,
    size: u64,
    sha: String,
    status: &etcdkit::client::Status,
) -> Results {
    vec![
        ("snapshot.path".into(), path.display().to_string()),
        ("snapshot.size".into(), size.to_string()),
        ("snapshot.sha256".into(), sha),
        ("snapshot.version".into(), status.version.clone()),
        (
            "snapshot.revision".into(),
            status.header.revision.to_string(),
        ),
        (
            "copy.cmd".into(),
            format!("juju scp {}:{} .", ctx.unit, path.display()),
        ),
    ]
}

fn snapshot_v2(ctx: &Context, inst: &Installed, target: &Path, name: &str) -> Result<Results> {
    let data = unit::data_dir(false)?;
    let work = tempfile::tempdir_in(target)?;
    let backup = work.path().join("backup");
    let out = std::process::Command::new(inst.etcdctl())
        .env("ETCDCTL_API", "2")
        .args(["backup", "--data-dir", &data, "--backup-dir"])
        .arg(&backup)
        .output()
        .with_context(|| format!("running {}", inst.etcdctl()))?;
    if !out.status.success() {
        return refuse(format!(
            "v2 backup is not available with etcd {}: {}",
            inst.version,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let path = target.join(format!("{name}.tar.gz"));
    let tmp = target.join(format!(".{name}.part"));
    {
        let f = pki::create_operator_file(&tmp)?;
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            f,
            flate2::Compression::default(),
        ));
        b.append_dir_all(".", &backup)?;
        b.into_inner()?.finish()?.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(vec![
        ("snapshot.path".into(), path.display().to_string()),
        (
            "snapshot.size".into(),
            std::fs::metadata(&path)?.len().to_string(),
        ),
        (
            "snapshot.sha256".into(),
            etcdkit::install::sha256_file(&path)?,
        ),
        ("snapshot.version".into(), "v2".into()),
        (
            "copy.cmd".into(),
            format!("juju scp {}:{} .", ctx.unit, path.display()),
        ),
    ])
}

fn compact(params: &std::collections::BTreeMap<String, Value>) -> Result<Results> {
    let raw = match params.get("revision") {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    let revision: Option<u64> = if raw.is_empty() {
        None
    } else {
        Some(raw.parse().map_err(|_| Refused(format!("revision {raw:?} is not a number; give a revision such as 1234, or leave it empty for the current one")))?)
    };
    let physical = param_bool(params, "physical", false);
    let (client, ep, _) = local()?;
    let rev = match revision {
        Some(r) => r,
        None => client.revision(&ep)?,
    };
    match client.compact(&ep, rev, physical) {
        Ok(()) => Ok(vec![
            ("output".into(), format!("compacted revision {rev}")),
            ("revision".into(), rev.to_string()),
        ]),
        Err(e) if e.status() == Some(400) => {
            refuse(format!("cannot compact to revision {rev}: {e}"))
        }
        Err(e) => Err(e.into()),
    }
}

fn defrag(params: &std::collections::BTreeMap<String, Value>) -> Result<Results> {
    let (client, ep, _) = local()?;
    if !param_bool(params, "all", false) {
        let status = client.status(&ep)?;
        let before = status.db_size;
        // bbolt writes a compacted copy of the in-use pages beside the database.
        let in_use = status.db_size_in_use;
        let data = unit::data_dir(false)?;
        if let Err(e) = unit::ensure_room(
            Path::new(&data),
            in_use,
            None,
            "defragmenting (a copy of the in-use database)",
        ) {
            return refuse(format!("{e:#}"));
        }
        crate::pki::tls_client_waiting(Duration::from_secs(300))?.defrag(&ep)?;
        let after = client.status(&ep)?.db_size;
        return Ok(vec![
            (
                "output".into(),
                format!("Finished defragmenting etcd member[{ep}]"),
            ),
            ("db-size.before".into(), before.to_string()),
            ("db-size.after".into(), after.to_string()),
        ]);
    }
    // Every member, one at a time, the raft leader last, each behind the health gate.
    let members: Vec<Member> = client
        .member_list(&ep)?
        .into_iter()
        .filter(|m| m.is_voter())
        .collect();
    let raft_leader = client.status(&ep)?.leader;
    let targets = crate::ops::defrag::order(members, raft_leader);
    let slow = crate::pki::tls_client_waiting(Duration::from_secs(300))?;
    let (done, stopped) =
        crate::ops::defrag::one_at_a_time(&slow, &ep, &targets, &mut |l| juju::action_log(l));
    let lines: Vec<String> = done.iter().map(|d| d.to_string()).collect();
    if let Some(why) = stopped {
        return refuse(format!(
            "{why}; defragmented before stopping: {}",
            if lines.is_empty() {
                "none".to_string()
            } else {
                lines.join(", ")
            }
        ));
    }
    let mut results: Results = vec![(
        "output".into(),
        format!(
            "Defragmented {} members one at a time: {}",
            done.len(),
            lines.join(", ")
        ),
    )];
    for d in &done {
        results.push((format!("{}.before", d.name), d.before.to_string()));
        results.push((format!("{}.after", d.name), d.after.to_string()));
    }
    Ok(results)
}

fn alarm_text(a: &etcdkit::client::Alarm) -> String {
    format!("memberID:{} alarm:{}", a.member_id, a.alarm)
}

fn alarm_list() -> Result<Results> {
    let (client, ep, _) = local()?;
    let alarms = client.alarms(&ep)?;
    Ok(vec![
        (
            "alarm-list".into(),
            alarms.iter().map(alarm_text).collect::<Vec<_>>().join("\n"),
        ),
        ("count".into(), alarms.len().to_string()),
    ])
}

fn alarm_disarm() -> Result<Results> {
    let (client, ep, _) = local()?;
    let alarms = client.alarms(&ep)?;
    for a in &alarms {
        client.alarm_disarm(&ep, a)?;
    }
    let left = client.alarms(&ep)?;
    Ok(vec![
        (
            "alarm-disarm".into(),
            alarms.iter().map(alarm_text).collect::<Vec<_>>().join("\n"),
        ),
        ("remaining".into(), left.len().to_string()),
    ])
}

/// Re-installs this unit from the attached `etcd` resource; rolls back to the previous
/// binaries unless etcd comes back healthy.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_gives_both_variable_generations() {
        let r = credentials_readme(&[
            "https://10.0.0.1:2379".into(),
            "https://10.0.0.2:2379".into(),
        ]);
        assert!(r.contains("ETCDCTL_ENDPOINTS=https://10.0.0.1:2379,https://10.0.0.2:2379"));
        for v in [
            "ETCDCTL_CACERT",
            "ETCDCTL_CERT=",
            "ETCDCTL_KEY=",
            "ETCDCTL_CA_FILE",
            "ETCDCTL_CERT_FILE",
            "ETCDCTL_KEY_FILE",
        ] {
            assert!(r.contains(v), "{v}");
        }
    }
}
