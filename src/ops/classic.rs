//! A running deployment of the classic etcd charm on this machine: what `juju refresh etcd
//! --switch` from it leaves this charm to find (../shared/classic-footprint.md): the
//! `etcd` snap's service on `/var/snap/etcd/common/etcd.conf.yml`, a file this charm never
//! writes (its own config is /etc/etcd/etcd.conf.yml), and none of this charm's records.
//!
//! Until its turn (`hook::takeover` grants one member at a time) a unit that finds one
//! touches nothing. In its turn, `adopt` makes the member this charm's, keeping its name,
//! its ID and its data: the certificates the CA on the `certificates` relation issued for
//! this unit go in place, the snap's own service and the boot-time kicker are stopped and
//! disabled, the data moves to this charm's data directory (a rename on the same
//! filesystem, else a verified copy; on the `data` volume it stays where it is), the snap
//! is recorded as this charm's delivery and, last, the unit's state says how the member
//! was formed. Every step is safe to run again: a unit killed part-way is still untaken
//! (its state is written last) and the next hook in its turn runs `adopt` again.

use crate::juju;
use crate::pki::{self, authority};
use crate::unit::{crash_point, has_member_data, LocalState};
use anyhow::{bail, Context as _, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The classic charm's etcd config and certificates (its snap's `$SNAP_COMMON`).
pub const CLASSIC_DIR: &str = "/var/snap/etcd/common";
pub const CLASSIC_CONFIG: &str = "/var/snap/etcd/common/etcd.conf.yml";
/// The snap's daemon and the classic charm's boot-time kicker of it.
const SNAP_SERVICE: &str = "snap.etcd.etcd.service";
const KICKER: &str = "cdk-service-kicker.service";

pub(crate) use crate::unit::peers::CLASSIC_PHASE as PHASE;
/// Written by a unit as its takeover begins: on a classic unit, a takeover to finish; on a
/// unit taken over, one whose leader may still have turns to grant (removed by a unit that
/// does not lead, and by the leader once no classic unit is left).
pub const MARKER: &str = "/var/lib/etcd-charm/takeover";

/// What a unit that finds the classic footprint and cannot take it over says.
pub const SWITCH_BACK: &str = "switch back to the classic charm (juju refresh etcd \
    --switch ch:etcd --channel <the channel it came from>) or fix the cause";

/// Whether this machine holds the classic charm's etcd and it is not this charm's yet.
pub fn untaken() -> Result<bool> {
    untaken_in(Path::new("/"))
}

fn untaken_in(root: &Path) -> Result<bool> {
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    let exists = |p: &str| {
        at(p)
            .try_exists()
            .with_context(|| format!("looking for {p}"))
    };
    Ok(exists(CLASSIC_CONFIG)? && !exists(crate::unit::LOCAL_STATE)?)
}

/// The classic member as its config describes it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Member {
    pub name: String,
    pub data_dir: String,
    pub initial_cluster: String,
    #[serde(rename = "initial-cluster-token")]
    pub token: String,
    #[serde(rename = "initial-advertise-peer-urls")]
    pub peer_url: String,
    #[serde(rename = "advertise-client-urls")]
    pub client_url: String,
}

/// Reads the classic config; every field is checked, and a member named otherwise than
/// this unit's member (`etcd/0` → `etcd0`) is refused by name.
pub fn read(unit: &str) -> Result<Member> {
    let text = std::fs::read_to_string(CLASSIC_CONFIG)
        .with_context(|| format!("reading the classic charm's config {CLASSIC_CONFIG}"))?;
    parse(&text, &crate::unit::member_name(unit))
}

pub fn parse(text: &str, want_name: &str) -> Result<Member> {
    let m: Member = serde_yaml::from_str(text)
        .with_context(|| format!("parsing the classic charm's config {CLASSIC_CONFIG}"))?;
    let https = |u: &str| u.starts_with("https://") && !u.contains(',');
    if m.name != want_name {
        bail!(
            "the classic member here is named {:?}, not {want_name:?} as this unit's member \
             would be: it is not taken over",
            juju::bounded(&m.name, 64)
        );
    }
    if !https(&m.peer_url) || !https(&m.client_url) {
        bail!("the classic config's advertised URLs are not one https URL each ({CLASSIC_CONFIG})");
    }
    if !m.data_dir.starts_with('/') || m.token.is_empty() || m.initial_cluster.is_empty() {
        bail!("the classic config lacks its data-dir, token or initial-cluster ({CLASSIC_CONFIG})");
    }
    Ok(m)
}

/// The oldest etcd this charm takes over: what it renders its config for and tests (the
/// classic charm's default channel since 2020 is 3.4/stable).
pub const OLDEST: etcdkit::version::Version = etcdkit::version::Version {
    major: 3,
    minor: 4,
    patch: 0,
};

/// The classic snap's etcd version, refused when older than `OLDEST` with what to do.
pub fn check_version() -> Result<etcdkit::version::Version> {
    let bin = Path::new(etcdkit::install::CLASSIC_SNAP_BIN).join("etcd");
    let text = etcdkit::install::binary_version(&bin)
        .with_context(|| format!("asking {} its version", bin.display()))?;
    let v = etcdkit::version::Version::parse(&text)
        .ok_or_else(|| anyhow::anyhow!("{} names no etcd version ({text:?})", bin.display()))?;
    if v < OLDEST {
        bail!(
            "the classic member runs etcd {v}: this charm takes over {OLDEST} or later; \
             upgrade it first with the classic charm (its channel config, e.g. \
             juju config etcd channel=3.4/stable, after switching back)"
        );
    }
    Ok(v)
}

/// The TLS files etcdctl asks with: the classic member's own (its server certificate serves
/// as its client certificate, as the classic charm's etcdctl uses it) before the takeover,
/// this charm's after.
pub fn credentials(untaken: bool) -> [String; 3] {
    if untaken {
        ["ca.crt", "server.crt", "server.key"].map(|f| format!("{CLASSIC_DIR}/{f}"))
    } else {
        ["ca.crt", "client.crt", "client.key"].map(|f| pki::path(f).display().to_string())
    }
}

/// Makes the classic member this charm's (see the module's doc). `provided` is what the
/// CA on the `certificates` relation issued for this unit; `data` this charm's data
/// directory; `resource` the attached `etcd` resource.
pub fn adopt(
    member: &Member,
    provided: &authority::Provided,
    data: &str,
    resource: Option<&Path>,
) -> Result<()> {
    let (Some((cert, key)), Some((ccert, ckey))) = (&provided.server, &provided.client) else {
        bail!("the CA on the certificates relation has not issued this unit's certificates");
    };
    juju::log(
        "INFO",
        &format!("taking over the classic member {}", member.name),
    );
    // First: a takeover cut short is this unit's to finish, whatever the cluster's health
    // says by then (its own member may be the one that is down).
    hostkit::fs::write_file(Path::new(MARKER), b"", 0o644)?;
    crash_point("takeover-start");
    // One CA on both ports, the one the classic members trust: the peer port moves to this
    // charm's peer CA by its usual three steps once every member is taken over.
    let trust = authority::bundle(&authority::split(&provided.ca));
    for (file, text, mode) in [
        ("ca.crt", &trust, 0o644),
        ("peer-ca.crt", &trust, 0o644),
        ("server.crt", cert, 0o644),
        ("server.key", key, 0o600),
        ("peer.crt", cert, 0o644),
        ("peer.key", key, 0o600),
        ("client.crt", ccert, 0o644),
        ("client.key", ckey, 0o600),
    ] {
        pki::update_file(&pki::path(file), text, mode)?;
    }
    crash_point("takeover-certs");
    stop_classic_services()?;
    crash_point("takeover-stopped");
    move_data(&member.data_dir, data)?;
    crash_point("takeover-data-moved");
    etcdkit::install::adopt_snap(resource)?;
    crash_point("takeover-recorded");
    // Last: from here on the machine is this charm's.
    let st = LocalState {
        initial_cluster: Some(member.initial_cluster.clone()),
        initial_state: Some("existing".into()),
        token: Some(member.token.clone()),
        epoch: Some("1".into()),
        ..Default::default()
    };
    st.save()?;
    juju::log(
        "INFO",
        &format!(
            "the classic member {} is this charm's: its data is in {data}",
            member.name
        ),
    );
    Ok(())
}

/// The snap's daemon stopped and disabled (`snap stop --disable` holds across refreshes
/// and reboots), and the kicker that would start it again after a boot disabled.
fn stop_classic_services() -> Result<()> {
    etcdkit::install::disable_snap_daemon()?;
    if Path::new("/etc/systemd/system").join(KICKER).exists() {
        hostkit::systemd::systemctl(&["disable", "--now", KICKER])?;
    }
    // snap stop returns once systemd stopped the unit; checked all the same.
    let active = std::process::Command::new("systemctl")
        .args(["is-active", "--quiet", SNAP_SERVICE])
        .status()
        .context("asking systemctl whether the snap's etcd still runs")?
        .success();
    if active {
        bail!("{SNAP_SERVICE} still runs after snap stop");
    }
    Ok(())
}

/// The member's data from the classic data directory (the snap's revision directory, or
/// the `data` volume) to `to`: a rename on the same filesystem, else a verified copy (the
/// original kept aside). Done already when `to` holds the member and the source does not.
fn move_data(classic_dir: &str, to: &str) -> Result<()> {
    let from: PathBuf = std::fs::canonicalize(classic_dir)
        .with_context(|| format!("resolving the classic data directory {classic_dir}"))?;
    let to_path = Path::new(to);
    std::fs::create_dir_all(to_path).with_context(|| format!("making {to}"))?;
    if std::fs::canonicalize(to_path)? == from {
        return Ok(());
    }
    let from_s = from.display().to_string();
    match (has_member_data(&from_s), has_member_data(to)) {
        (false, true) => return Ok(()),
        (false, false) => {
            bail!("the classic member's data is in neither {from_s} nor {to}: it is not taken over")
        }
        (true, true) => bail!(
            "both {from_s} and {to} hold a member's data: move the one that is not this \
             member's aside, and Juju retries the hook"
        ),
        (true, false) => {}
    }
    use std::os::unix::fs::MetadataExt;
    let same_fs = std::fs::metadata(&from)?.dev() == std::fs::metadata(to_path)?.dev();
    if same_fs {
        std::fs::rename(from.join("member"), to_path.join("member"))
            .with_context(|| format!("moving {from_s}/member to {to}"))?;
        crate::ops::relocate::sync_dir(to_path)?;
        juju::log(
            "INFO",
            &format!("moved the classic member's data from {from_s} to {to}"),
        );
        return Ok(());
    }
    crate::ops::relocate::move_member(&from_s, to).map(|_| ())
}

/// The cluster's health before each takeover: every member started, votes and answers
/// healthy. Asked with the snap's etcdctl over gRPC: a classic member of etcd 3.4 serves no
/// JSON gateway (3.4 turns it off under a config file that does not turn it on, and the
/// classic charm's does not). `creds` are `credentials`.
pub fn cluster_healthy(creds: &[String; 3], port: u16) -> Result<usize, String> {
    let ask = |args: &[&str]| -> Result<serde_json::Value, String> {
        let out =
            std::process::Command::new(format!("{}/etcdctl", etcdkit::install::CLASSIC_SNAP_BIN))
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints=https://127.0.0.1:{port}"))
                .arg(format!("--cacert={}", creds[0]))
                .arg(format!("--cert={}", creds[1]))
                .arg(format!("--key={}", creds[2]))
                .args(["--dial-timeout=3s", "--command-timeout=5s", "-w", "json"])
                .args(args)
                .output()
                .map_err(|e| format!("running etcdctl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "etcdctl {}: {}",
                args.join(" "),
                juju::bounded(String::from_utf8_lossy(&out.stderr).trim(), 300)
            ));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("etcdctl's answer: {e}"))
    };
    let list = ask(&["member", "list"])?;
    let members = list["members"].as_array().cloned().unwrap_or_default();
    for m in &members {
        let started = m["name"].as_str().is_some_and(|n| !n.is_empty())
            && m["clientURLs"].as_array().is_some_and(|u| !u.is_empty());
        if !started || m["isLearner"].as_bool() == Some(true) {
            return Err(format!(
                "member {} has not started or does not vote",
                m["ID"]
            ));
        }
    }
    let health = ask(&["endpoint", "health", "--cluster"])?;
    let healthy = health
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["health"].as_bool() == Some(true))
                .count()
        })
        .unwrap_or(0);
    if members.is_empty() || healthy != members.len() {
        return Err(format!(
            "{healthy} of {} members answer healthy",
            members.len()
        ));
    }
    Ok(members.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, p: &str) {
        let f = root.join(p.trim_start_matches('/'));
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, "x").unwrap();
    }

    #[test]
    fn the_classic_config_without_this_charms_state_is_an_untaken_member() {
        let d = tempfile::tempdir().unwrap();
        assert!(!untaken_in(d.path()).unwrap(), "nothing there");
        put(d.path(), CLASSIC_CONFIG);
        assert!(untaken_in(d.path()).unwrap());
        // The install record alone (a takeover killed after it) is not the charm's yet.
        put(d.path(), etcdkit::install::STATE_FILE);
        assert!(untaken_in(d.path()).unwrap());
        put(d.path(), crate::unit::LOCAL_STATE);
        assert!(!untaken_in(d.path()).unwrap());
    }

    const CONFIG: &str = "name: etcd0\ndata-dir: /var/snap/etcd/current\nenable-v2: true\n\
        initial-advertise-peer-urls: https://10.0.0.1:2380\n\
        advertise-client-urls: https://10.0.0.1:2379\n\
        initial-cluster: etcd0=https://10.0.0.1:2380\ninitial-cluster-token: 'AB12CD'\n\
        initial-cluster-state: new\nstrict-reconfig-check: true\n";

    #[test]
    fn the_classic_config_is_read_and_checked() {
        let m = parse(CONFIG, "etcd0").unwrap();
        assert_eq!(m.token, "AB12CD");
        assert_eq!(m.data_dir, "/var/snap/etcd/current");
        assert_eq!(m.peer_url, "https://10.0.0.1:2380");
        let e = parse(CONFIG, "etcd1").unwrap_err();
        assert!(format!("{e:#}").contains("not \"etcd1\""), "{e:#}");
        let e = parse(
            &CONFIG.replace("https://10.0.0.1:2379", "http://10.0.0.1:2379"),
            "etcd0",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("advertised URLs"), "{e:#}");
        assert!(parse("name: [", "etcd0").is_err());
        assert!(parse(
            &CONFIG.replace("initial-cluster-token: 'AB12CD'\n", ""),
            "etcd0"
        )
        .is_err());
    }
}
