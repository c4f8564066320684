//! The swap at the heart of restore and recover, and its undo: a journal written before the
//! member's data is set aside, cleared once the restored member is proven healthy, and
//! undone by the next hook or action when the process died in between
//! (`recover_interrupted`). Also the epoch a rebuilt cluster publishes and the config of a
//! member not proven yet (clients on loopback only).

use crate::juju::{self, Bag, Context};
use crate::unit::{self, LocalState};
use anyhow::{anyhow, Context as _, Result};
use etcdkit::install::Installed;
use etcdkit::service::Service;
use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) const JOURNAL: &str = "/var/lib/etcd-charm/restore-journal.json";

/// The journal, if any, is readable (a corrupt one blocks the unit: `check_local_files`).
pub(crate) fn check_journal() -> Result<()> {
    unit::read_json::<Journal>(JOURNAL).map(|_| ())
}

/// What a restore in the middle of its swap must be able to undo.
/// Used by restore and recover alike.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Journal {
    pub aside: String,
    pub member: String,
    pub config: String,
    pub initial_cluster: Option<String>,
    pub initial_state: Option<String>,
    pub token: Option<String>,
    pub epoch: Option<String>,
}

impl Journal {
    /// What to put back: the member at `member` (set aside at `aside`), the etcd config now
    /// in place, and the unit's state as it is.
    pub fn new(aside: &Path, member: &Path, st: &LocalState) -> Result<Journal> {
        Ok(Journal {
            aside: aside.display().to_string(),
            member: member.display().to_string(),
            config: std::fs::read_to_string(etcdkit::service::CONFIG_FILE)
                .context("reading the etcd config")?,
            initial_cluster: st.initial_cluster.clone(),
            initial_state: st.initial_state.clone(),
            token: st.token.clone(),
            epoch: st.epoch.clone(),
        })
    }
    pub fn save(&self) -> Result<()> {
        unit::write_json(JOURNAL, self)
    }
    pub fn clear() -> Result<()> {
        unit::remove_if_present(Path::new(JOURNAL))
    }
}

/// The epoch a rebuilt cluster (restore, recover) publishes: one past the application's.
pub(crate) fn next_epoch(ctx: &Context) -> Result<u64> {
    Ok(juju::relation_ids(unit::PEER)?
        .first()
        .and_then(|r| juju::relation_get(r, &ctx.app, true).ok())
        .and_then(|b| b.get("epoch").and_then(|e| e.parse().ok()))
        .unwrap_or(1)
        + 1)
}

/// Undoes a restore (or recover) whose process died during its swap (before the new member
/// was proven healthy): etcd stopped, the half-restored member set aside as
/// `.failed-restore-<time>`, the original data, state and config put back. Every hook runs
/// this first; the restore can then be run again.
pub fn recover_interrupted() -> Result<()> {
    let Some(j) = unit::read_json::<Journal>(JOURNAL)? else {
        return Ok(());
    };
    juju::log(
        "WARNING",
        &format!(
            "a restore or recover was interrupted; putting the data from {} back",
            j.aside
        ),
    );
    let svc = Service {
        etcd_binary: Installed::load().map(|i| i.etcd()).unwrap_or_default(),
    };
    svc.stop()?;
    let member = Path::new(&j.member);
    let original = Path::new(&j.aside).join("member");
    if original.exists() {
        if member.exists() {
            let failed = member.with_file_name(format!(".failed-restore-{}", unit::now()));
            std::fs::rename(member, &failed).context("setting the half-restored member aside")?;
        }
        std::fs::rename(&original, member).context("putting the original member back")?;
    }
    remove_empty_aside(Path::new(&j.aside));
    let mut st = LocalState::load()?;
    st.initial_cluster = j.initial_cluster;
    st.initial_state = j.initial_state;
    st.token = j.token;
    st.epoch = j.epoch;
    st.save()?;
    crate::pki::write_file(
        Path::new(etcdkit::service::CONFIG_FILE),
        j.config.as_bytes(),
        0o644,
    )?;
    Journal::clear()?;
    svc.start()?;
    Ok(())
}

pub(crate) fn rerender(
    st: &LocalState,
    cfg: &crate::config::Config,
    name: &str,
    address: &str,
    data: &str,
) -> Result<()> {
    write_config(&render_for(st, cfg, name, address, data)?)
}

/// Writes etcd's config as `rendered` would have it, but with clients served on loopback
/// only (`render::clients_on_loopback`), and returns the endpoint to check the member at:
/// a member whose data a crash would still undo acknowledges no client's write.
pub(crate) fn write_unproven(rendered: &str) -> Result<String> {
    let (text, ep) = etcdkit::render::clients_on_loopback(rendered)
        .ok_or_else(|| anyhow!("etcd's config names no https client URL"))?;
    write_config(&text)?;
    Ok(ep)
}

pub(crate) fn write_config(text: &str) -> Result<()> {
    crate::pki::write_file(
        Path::new(etcdkit::service::CONFIG_FILE),
        text.as_bytes(),
        0o644,
    )?;
    Ok(())
}

pub(crate) fn render_for(
    st: &LocalState,
    cfg: &crate::config::Config,
    name: &str,
    address: &str,
    data: &str,
) -> Result<String> {
    let m = etcdkit::render::Member {
        name: name.into(),
        address: address.into(),
        data_dir: data.into(),
        initial_cluster: st.initial_cluster.clone().unwrap_or_default(),
        state: etcdkit::render::ClusterState::New,
        token: st.token.clone().unwrap_or_default(),
        pki_dir: crate::pki::PKI_DIR.into(),
        version: Installed::load()
            .ok_or_else(|| anyhow!("etcd is not installed"))?
            .version()?,
    };
    Ok(etcdkit::render::etcd_config(&m, &cfg.etcd_settings()))
}

pub(crate) fn publish_epoch(
    ctx: &Context,
    epoch: u64,
    token: &str,
    name: &str,
    peer_url: &str,
) -> Result<()> {
    let Some(rel) = juju::relation_ids(unit::PEER)?.into_iter().next() else {
        return Ok(());
    };
    let mut b = Bag::new();
    b.insert("epoch".into(), epoch.to_string());
    b.insert("token".into(), token.into());
    b.insert("bootstrap".into(), name.into());
    b.insert("initial-cluster".into(), format!("{name}={peer_url}"));
    b.insert("join".into(), String::new());
    juju::relation_set(&rel, &b, true)?;
    let _ = ctx;
    Ok(())
}

/// Deletes directories of the data dir off the action's clock (hundreds of MiB take a
/// while to free): each is renamed at once into a `.trash-*` directory, which no restore
/// uses, and a process of its own session deletes that after the action has answered. A
/// trash directory left by a crash is swept by the next restore (`sweep_trash`). Only data
/// whose replacement is proven comes here.
pub(crate) fn discard_later(data: &Path, dirs: &[&Path]) {
    let trash = data.join(format!(".trash-{}-{}", unit::now(), std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&trash) {
        juju::log(
            "WARNING",
            &format!("cannot create {}: {e}", trash.display()),
        );
        return;
    }
    for (i, d) in dirs.iter().enumerate() {
        if d.exists() {
            if let Err(e) = std::fs::rename(d, trash.join(i.to_string())) {
                juju::log("WARNING", &format!("cannot discard {}: {e}", d.display()));
            }
        }
    }
    let spawned = Command::new("setsid")
        .args(["rm", "-rf", "--"])
        .arg(&trash)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(e) = spawned {
        juju::log(
            "WARNING",
            &format!(
                "cannot start deleting {}: {e}; deleting it now",
                trash.display()
            ),
        );
        // What stays is trash only (the restored member is proven); the next restore
        // sweeps it.
        let _ = std::fs::remove_dir_all(&trash);
    }
}

/// The aside directory once its member is back in place: removed only if empty (anything
/// else in it stays for the operator).
pub(crate) fn remove_empty_aside(aside: &Path) {
    match std::fs::remove_dir(aside) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => juju::log("WARNING", &format!("{} is kept: {e}", aside.display())),
    }
}

/// Deletes trash directories a crashed or interrupted `discard_later` left behind.
pub(crate) fn sweep_trash(data: &Path) {
    for trash in unit::entries_named(data, ".trash-") {
        // Trash that will not go costs disk, not data: said, and left for the next try.
        // (NotFound: the previous restore's own deletion got there first.)
        match std::fs::remove_dir_all(&trash) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => juju::log(
                "WARNING",
                &format!("cannot delete {}: {err}", trash.display()),
            ),
            _ => {}
        }
    }
}

/// Removes the staging dir when dropped.
pub(crate) struct Guard(PathBuf);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn scopeguard(p: PathBuf) -> Guard {
    Guard(p)
}
