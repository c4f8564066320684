//! `nrpe-external-master`: the classic charm's Nagios checks, run by NRPE (the nrpe
//! subordinate on this unit's machine). Two checks, as the classic charm has:
//! - `check_etcd`: is this unit's etcd service running (systemd's word, or the built-in
//!   supervisor's);
//! - `check_etcd-alarms`: are alarms raised in the cluster (NOSPACE, CORRUPT).
//!
//! NRPE runs its commands as the `nagios` user, who cannot read this unit's client key; so,
//! as the classic charm does with cron, a root job on a systemd timer writes the alarm list
//! to a file the check reads. The check program is a copy of this binary outside the charm
//! directory (`nagios-check`). Each check is an `/etc/nagios/nrpe.d/check_<name>.cfg`
//! command, a Nagios service definition in `/var/lib/nagios/export` when the nrpe charm
//! collects them there, and an entry of the `monitors` YAML on the relation, which the nrpe
//! charm passes to Nagios. All of it goes when the relation does.

use crate::config::nagios::check_names;
use crate::juju::{self, Bag, Hook, RelationEvent};
use crate::pki;
use anyhow::{anyhow, Context, Result};
use etcdkit::client::Client;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::Path;

pub const ENDPOINT: &str = "nrpe-external-master";
const NRPE_DIR: &str = "/etc/nagios/nrpe.d";
const EXPORT_DIR: &str = "/var/lib/nagios/export";
const PLUGIN: &str = "/usr/local/lib/nagios/plugins/etcd-charm-check";
const ALARM_LIST: &str = "/var/lib/nagios/etcd-alarm-list.json";
const ALARM_JOB: &str = "etcd-charm-nagios-alarms";
const ALARM_EVERY_SECS: u64 = 60;
/// An alarm list older than this is not vouched for (five missed refreshes).
const ALARM_MAX_AGE_SECS: i64 = 5 * ALARM_EVERY_SECS as i64;

/// One check: `check_<shortname>` runs `command`.
struct Check {
    shortname: &'static str,
    description: String,
    command: String,
}

fn checks(unit: &str) -> Vec<Check> {
    vec![
        Check {
            shortname: "etcd",
            description: format!("etcd service {{{unit}}}"),
            command: format!("{PLUGIN} nagios-check service"),
        },
        Check {
            shortname: "etcd-alarms",
            description: "etcd has no raised alarms".into(),
            command: format!("{PLUGIN} nagios-check alarms"),
        },
    ]
}

/// The hooks after which the checks may need to change: the relation's own, a new
/// configuration (context, service groups, the client port), a new charm binary, a reboot.
pub fn concerns(hook: Option<&Hook>) -> bool {
    hook.is_some_and(|h| {
        h.of_relation("nrpe-external-master")
            || matches!(h, Hook::ConfigChanged | Hook::UpgradeCharm | Hook::Start)
    })
}

/// Brings this unit's checks in line with the relation: in place while it exists (and this
/// unit is not leaving it), gone otherwise. Errors name what failed.
pub fn reconcile(
    unit: &str,
    hook: Option<&Hook>,
    context: &str,
    servicegroups: &str,
    endpoint: &str,
) -> Result<()> {
    let rel = juju::relation_ids(ENDPOINT)?.into_iter().next();
    match rel {
        Some(rel) if !hook.is_some_and(|h| h.is_relation(ENDPOINT, RelationEvent::Broken)) => {
            set_up(&rel, unit, context, servicegroups, endpoint)
        }
        _ => tear_down(),
    }
}

fn set_up(rel: &str, unit: &str, context: &str, groups: &str, endpoint: &str) -> Result<()> {
    if !hostkit::systemd::systemd_present() {
        anyhow::bail!(
            "the alarm check needs systemd on the machine (a timer refreshes the alarm list)"
        );
    }
    install_plugin()?;
    // The first list now, so the check has one before the timer's first run.
    if !Path::new(ALARM_LIST).exists() {
        refresh_alarm_list(endpoint)?;
    }
    let exe = std::env::current_exe().context("cannot tell where this charm's binary is")?;
    hostkit::systemd::ensure(&hostkit::systemd::Job {
        unit: ALARM_JOB,
        description: "etcd alarm list for the NRPE check",
        exec: format!("{} nagios-alarm-list --endpoint {endpoint}", exe.display()),
        when: format!("OnActiveSec=0\nOnUnitActiveSec={ALARM_EVERY_SECS}s\n"),
    })
    .map_err(|e| anyhow!(e))?;
    let hostname = nagios_hostname(rel, unit, context)?;
    let groups = if groups.is_empty() {
        context.to_string()
    } else {
        groups
            .split(',')
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut changed = false;
    let mut monitors = serde_json::Map::new();
    let checks = checks(unit);
    // NRPE's directory comes with the nrpe charm's packages: until then there is nothing
    // to configure (its relation hooks come again once it is installed).
    let nrpe_ready = Path::new(NRPE_DIR).is_dir();
    for c in &checks {
        if nrpe_ready {
            let cfg = format!(
                "# {} (the etcd charm, unit {unit})\ncommand[check_{}]={}\n",
                c.description, c.shortname, c.command
            );
            changed |= pki::update_file(
                Path::new(&format!("{NRPE_DIR}/check_{}.cfg", c.shortname)),
                &cfg,
                0o644,
            )?;
        }
        export_service(c, unit, &hostname, &groups)?;
        monitors.insert(
            c.shortname.into(),
            json!({"command": format!("check_{}", c.shortname)}),
        );
    }
    if changed {
        reload_nrpe();
    }
    publish_monitors(rel, unit, &hostname, monitors)
}

/// The host name the nrpe charm gives, else the classic `<context>-<unit>`.
fn nagios_hostname(rel: &str, unit: &str, context: &str) -> Result<String> {
    let mut hostname = format!("{context}-{}", unit.replace('/', "-"));
    for remote in juju::relation_list(rel)? {
        if let Some(h) = juju::relation_get(rel, &remote, false)?.get("nagios_hostname") {
            if !h.is_empty() {
                // It names files here: only a plain name is taken.
                check_names(&format!("the nagios_hostname {remote} gives"), h, false)
                    .map_err(|e| anyhow!("{e}; ask the nrpe charm for another"))?;
                hostname = h.clone();
            }
        }
    }
    Ok(hostname)
}

/// The service definition the Nagios host collects for check `c`, when its export
/// directory is there.
fn export_service(c: &Check, unit: &str, hostname: &str, groups: &str) -> Result<()> {
    if !Path::new(EXPORT_DIR).is_dir() {
        return Ok(());
    }
    let service = format!(
        "#---------------------------------------------------\n\
         # Written by the etcd charm (unit {unit})\n\
         #---------------------------------------------------\n\
         define service {{\n    use                             active-service\n    \
         host_name                       {hostname}\n    \
         service_description             {hostname}[{name}] {desc}\n    \
         check_command                   check_nrpe!check_{name}\n    \
         servicegroups                   {groups}\n}}\n",
        name = c.shortname,
        desc = c.description,
    );
    // A host name that changed leaves no definition behind under the old one.
    remove_exports(c.shortname, Some(hostname))?;
    pki::update_file(
        Path::new(&format!(
            "{EXPORT_DIR}/service__{hostname}_check_{}.cfg",
            c.shortname
        )),
        &service,
        0o644,
    )?;
    Ok(())
}

/// The checks told to the nrpe charm (`monitors`), written only when they change.
fn publish_monitors(
    rel: &str,
    unit: &str,
    hostname: &str,
    monitors: serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    let yaml = serde_yaml::to_string(&json!({"monitors": {"remote": {"nrpe": monitors}}}))?;
    let mine = juju::relation_get(rel, unit, false)?;
    let mut writes = Bag::new();
    for (k, v) in [("monitors", yaml.as_str()), ("primary", "False")] {
        if mine.get(k).map(String::as_str) != Some(v) {
            writes.insert(k.into(), v.into());
        }
    }
    if !writes.is_empty() {
        juju::relation_set(rel, &writes, false)?;
        juju::log(
            "INFO",
            &format!("nrpe: checks check_etcd and check_etcd-alarms for host {hostname}"),
        );
    }
    Ok(())
}

/// Everything `set_up` made goes (nothing to do, a few file checks, when none is there).
pub fn tear_down() -> Result<()> {
    let mut changed = false;
    for c in checks("") {
        let cfg = format!("{NRPE_DIR}/check_{}.cfg", c.shortname);
        changed |= Path::new(&cfg).exists();
        crate::unit::remove_if_present(Path::new(&cfg))?;
        remove_exports(c.shortname, None)?;
    }
    hostkit::systemd::remove(ALARM_JOB).map_err(|e| anyhow!(e))?;
    crate::unit::remove_if_present(Path::new(ALARM_LIST))?;
    crate::unit::remove_if_present(Path::new(PLUGIN))?;
    if changed {
        reload_nrpe();
        juju::log("INFO", "nrpe: checks removed");
    }
    Ok(())
}

/// Removes the exported service definitions of check `shortname`, but the one for `keep`.
fn remove_exports(shortname: &str, keep: Option<&str>) -> Result<()> {
    let dir = match std::fs::read_dir(EXPORT_DIR) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {EXPORT_DIR}")),
    };
    let suffix = format!("_check_{shortname}.cfg");
    let kept = keep.map(|h| format!("service__{h}{suffix}"));
    for e in dir {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.starts_with("service__") && name.ends_with(&suffix) && Some(&name) != kept.as_ref()
        {
            crate::unit::remove_if_present(&Path::new(EXPORT_DIR).join(&name))?;
        }
    }
    Ok(())
}

/// NRPE reads its commands when it starts or reloads.
fn reload_nrpe() {
    if let Err(e) =
        hostkit::systemd::systemctl(&["try-reload-or-restart", "nagios-nrpe-server.service"])
    {
        juju::log("WARNING", &format!("nrpe: cannot reload NRPE: {e}"));
    }
}

/// The check program: a copy of this binary where the `nagios` user may run it (the charm
/// directory is the agent's), replaced when the charm's binary changes.
fn install_plugin() -> Result<()> {
    let exe = std::env::current_exe().context("cannot tell where this charm's binary is")?;
    let ours = std::fs::metadata(&exe).with_context(|| format!("reading {}", exe.display()))?;
    let current = match std::fs::metadata(PLUGIN) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {PLUGIN}")),
    };
    let fresh =
        current.is_some_and(|m| m.len() == ours.len() && m.modified().ok() >= ours.modified().ok());
    if fresh {
        return Ok(());
    }
    let bytes = std::fs::read(&exe).with_context(|| format!("reading {}", exe.display()))?;
    Ok(pki::write_file(Path::new(PLUGIN), &bytes, 0o755)?)
}

/// What the root job leaves for the alarm check (no secrets: alarms and member names).
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct AlarmList {
    /// when it was read (unix seconds)
    pub at: i64,
    pub endpoint: String,
    /// `NOSPACE on etcd1 (8e9e05c52164694d)`
    pub alarms: Vec<String>,
    /// why etcd could not be asked, when it could not
    pub error: Option<String>,
}

/// The timer's job: asks this unit's member for the cluster's alarms and writes the list
/// (an etcd that does not answer is written down as such: that is what the check reports).
pub fn refresh_alarm_list(endpoint: &str) -> Result<()> {
    let read = |client: &Client| -> Result<Vec<String>> {
        let alarms = client.alarms(endpoint)?;
        if alarms.is_empty() {
            return Ok(vec![]);
        }
        let members = client.member_list(endpoint)?;
        Ok(alarms
            .iter()
            .map(|a| {
                let name = members
                    .iter()
                    .find(|m| m.id == a.member_id)
                    .map(|m| m.name.clone())
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| "an unknown member".into());
                format!("{} on {name} ({:x})", a.alarm, a.member_id)
            })
            .collect())
    };
    let (alarms, error) = match crate::pki::tls_client().and_then(|c| read(&c)) {
        Ok(a) => (a, None),
        Err(e) => (vec![], Some(format!("{e:#}"))),
    };
    let list = AlarmList {
        at: crate::unit::now() as i64,
        endpoint: endpoint.to_string(),
        alarms,
        error,
    };
    Ok(pki::write_file(
        Path::new(ALARM_LIST),
        &serde_json::to_vec(&list)?,
        0o644,
    )?)
}

/// A Nagios plugin's answer: its exit code (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN) and one
/// line.
pub fn nagios_check(which: &str) -> (i32, String) {
    match which {
        "service" => service_check(),
        "alarms" => {
            let text = match std::fs::read_to_string(ALARM_LIST) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return (
                        3,
                        format!(
                        "UNKNOWN: no alarm list at {ALARM_LIST} yet (written by {ALARM_JOB}.timer)"
                    ),
                    )
                }
                Err(e) => return (3, format!("UNKNOWN: cannot read {ALARM_LIST}: {e}")),
            };
            match serde_json::from_str::<AlarmList>(&text) {
                Ok(list) => judge_alarms(&list, crate::unit::now() as i64),
                Err(e) => (
                    3,
                    format!("UNKNOWN: {ALARM_LIST} is not an alarm list: {e}"),
                ),
            }
        }
        other => (
            3,
            format!("UNKNOWN: no check {other:?} (the checks are service and alarms)"),
        ),
    }
}

/// The alarm check's verdict on a list read at `list.at`, `now`.
pub fn judge_alarms(list: &AlarmList, now: i64) -> (i32, String) {
    let age = now - list.at;
    if age > ALARM_MAX_AGE_SECS {
        return (
            1,
            format!(
                "WARNING: the etcd alarm list is {age}s old (refreshed every {ALARM_EVERY_SECS}s \
                 by {ALARM_JOB}.timer: is it running?)"
            ),
        );
    }
    if let Some(e) = &list.error {
        return (
            2,
            format!("CRITICAL: etcd at {} did not answer: {e}", list.endpoint),
        );
    }
    if !list.alarms.is_empty() {
        return (
            2,
            format!(
                "CRITICAL: alarm {} (run the alarm-list action; alarm-disarm once the cause is fixed)",
                list.alarms.join(", ")
            ),
        );
    }
    (0, format!("OK: no etcd alarms raised (checked {age}s ago)"))
}

fn service_check() -> (i32, String) {
    use etcdkit::service;
    if hostkit::systemd::systemd_present() {
        let out = std::process::Command::new("systemctl")
            .args(["is-active", "etcd.service"])
            .output();
        return match out {
            Ok(o) => {
                let state = String::from_utf8_lossy(&o.stdout).trim().to_string();
                match state.as_str() {
                    "active" => (0, "OK: etcd.service is active".into()),
                    "activating" | "reloading" => (1, format!("WARNING: etcd.service is {state}")),
                    _ => (2, format!("CRITICAL: etcd.service is {state}")),
                }
            }
            Err(e) => (3, format!("UNKNOWN: cannot run systemctl: {e}")),
        };
    }
    match std::fs::read_to_string(service::ETCD_PID) {
        Ok(p) => match p.trim().parse::<u32>() {
            Ok(pid) if hostkit::process::alive(pid) => (0, format!("OK: etcd runs (pid {pid})")),
            Ok(pid) => (2, format!("CRITICAL: etcd (pid {pid}) is not running")),
            Err(_) => (3, format!("UNKNOWN: {} holds no pid", service::ETCD_PID)),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            (2, "CRITICAL: etcd is not running".into())
        }
        Err(e) => (
            3,
            format!("UNKNOWN: cannot read {}: {e}", service::ETCD_PID),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(at: i64, alarms: &[&str], error: Option<&str>) -> AlarmList {
        AlarmList {
            at,
            endpoint: "https://10.0.0.1:2379".into(),
            alarms: alarms.iter().map(|a| a.to_string()).collect(),
            error: error.map(String::from),
        }
    }

    #[test]
    fn the_alarm_check_says_ok_critical_or_stale() {
        assert_eq!(judge_alarms(&list(100, &[], None), 130).0, 0);
        let (code, text) = judge_alarms(&list(100, &["NOSPACE on etcd1 (1f)"], None), 130);
        assert_eq!(code, 2);
        assert!(text.contains("NOSPACE on etcd1"), "{text}");
        let (code, text) = judge_alarms(&list(100, &[], Some("connection refused")), 130);
        assert_eq!(code, 2);
        assert!(
            text.contains("did not answer: connection refused"),
            "{text}"
        );
        // An old list is not vouched for, whatever it says.
        let (code, text) = judge_alarms(&list(100, &[], None), 100 + ALARM_MAX_AGE_SECS + 1);
        assert_eq!(code, 1);
        assert!(text.contains("is it running"), "{text}");
    }

    #[test]
    fn nagios_names_are_checked() {
        assert!(check_names("nagios_context", "juju", false).is_ok());
        assert!(check_names("nagios_context", "prod.eu-1_a", false).is_ok());
        for bad in ["", "a b", "x;reboot", "a\nb", &"x".repeat(65)] {
            assert!(
                check_names("nagios_context", bad, false).is_err(),
                "{bad:?}"
            );
        }
        assert!(check_names("nagios_servicegroups", "", true).is_ok());
        assert!(check_names("nagios_servicegroups", "etcd, prod", true).is_ok());
        assert!(check_names("nagios_servicegroups", "etcd,,prod", true).is_err());
        assert!(check_names("nagios_servicegroups", "a b", true).is_err());
    }

    #[test]
    fn the_checks_are_the_classic_charms_commands() {
        let c = checks("etcd/0");
        let names: Vec<&str> = c.iter().map(|c| c.shortname).collect();
        assert_eq!(names, ["etcd", "etcd-alarms"]);
        assert!(c.iter().all(|c| c.command.starts_with(PLUGIN)));
    }
}
