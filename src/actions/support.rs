//! What every action handler shares: refusals (an operator's mistake, reported as the
//! action's message, not as a charm failure), the leader check, this unit's endpoint, the
//! raft leader's, and a writable target directory.

use crate::config::Config;
use crate::juju::{self, Context};
use crate::pki;
use crate::pki::tls_client;
use crate::unit::status::Level;
use crate::unit::{self};
use anyhow::{anyhow, Result};
use etcdkit::client::{Client, Member};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// An action failure the operator should read (action-fail, exit 0).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

pub fn refuse<T>(msg: impl Into<String>) -> Result<T> {
    Err(Refused(msg.into()).into())
}

/// Refuses an action that only the leader may run, saying where to run it.
pub fn leader_only(ctx: &Context, action: &str) -> Result<()> {
    if !juju::is_leader()? {
        return refuse(format!(
            "{action} runs on the leader only; {} is not the leader (run it on etcd/leader)",
            ctx.unit
        ));
    }
    Ok(())
}

pub type Results = Vec<(String, String)>;

/// This unit's endpoint and a TLS client for it.
pub fn local() -> Result<(Client, String, Config)> {
    let cfg = Config::parse(&juju::config()?).map_err(Refused)?;
    let address = unit::peer_address()?;
    if !Path::new(&pki::path("server.crt")).exists() {
        return refuse("this unit has no certificates yet; wait until it is active");
    }
    Ok((tls_client()?, unit::endpoint(&address, cfg.port), cfg))
}

/// The raft leader's client URL.
pub fn leader_endpoint(client: &Client, ep: &str) -> Result<(String, Member)> {
    let m = client
        .leader_member(ep)?
        .ok_or_else(|| anyhow!("the cluster has no leader"))?;
    Ok((
        m.client_url()
            .ok_or_else(|| anyhow!("the leader has no client URL"))?,
        m,
    ))
}

/// Checks that `target` is an absolute directory we can write to (creating it if needed).
pub fn writable_dir(target: &str, param: &str) -> Result<PathBuf> {
    let p = PathBuf::from(target);
    if !p.is_absolute() {
        return refuse(format!("{param} {target:?} must be an absolute path"));
    }
    // Never etcd's own files (an archive written into the data directory), as the
    // snapshot_target option, resolved as the filesystem resolves it.
    if let Err(e) = crate::config::schedule::check_target(target) {
        return refuse(format!(
            "{param}: {}",
            e.trim_start_matches("snapshot_target ")
        ));
    }
    let existed = p.is_dir();
    if let Err(e) = std::fs::create_dir_all(&p) {
        return refuse(format!("{param} {target:?} cannot be created: {e}"));
    }
    if !existed {
        crate::pki::give_to_operator(&p)
            .map_err(|e| anyhow!("{param} {target:?}: giving it to the ubuntu user: {e}"))?;
    }
    if let Err(e) = tempfile::tempfile_in(&p) {
        return refuse(format!("{param} {target:?} is not writable: {e}"));
    }
    Ok(p)
}

/// A string parameter, or its default.
pub fn param_str<'a>(
    params: &'a std::collections::BTreeMap<String, Value>,
    k: &str,
    default: &'a str,
) -> &'a str {
    params.get(k).and_then(Value::as_str).unwrap_or(default)
}

/// A boolean parameter, or its default.
pub fn param_bool(
    params: &std::collections::BTreeMap<String, Value>,
    k: &str,
    default: bool,
) -> bool {
    params.get(k).and_then(Value::as_bool).unwrap_or(default)
}

/// Set when this action took its unit's member down (`member_going_away`).
static MEMBER_AWAY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Says in the unit's status, before an action stops the member, that it does (`what`);
/// `report_member` says how the member is when the action ends. Killed in between, the
/// status keeps saying so until the next hook finishes or undoes the step.
pub fn member_going_away(what: &str) -> Result<()> {
    MEMBER_AWAY.store(true, std::sync::atomic::Ordering::SeqCst);
    crate::unit::status::set(Level::Maintenance, what, false)
}

/// After an action that took the member down, its health in the unit's status, as a hook
/// reports it: no hook follows an action (as in Juju), and a lone unit would otherwise show
/// the action's maintenance status (or what the last hook saw) until update-status.
pub fn report_member() -> Result<()> {
    use crate::ops::health::{health, member_status, Health};
    if !MEMBER_AWAY.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(());
    }
    let (client, ep, _) = local()?;
    let status = client.status(&ep);
    // As the hook's report: a member that answers its status but not its health check is
    // unhealthy (the status says so), not a reason to leave the action's status on show.
    let healthy =
        status.as_ref().is_ok_and(|s| s.leader != 0) && client.health(&ep).unwrap_or(false);
    let h = health(status.as_ref().ok(), healthy, true);
    let voters = match h {
        Health::Silent => 0,
        _ => client
            .member_list(&ep)?
            .iter()
            .filter(|m| m.is_voter())
            .count(),
    };
    // An action has no view of the peers: recover is named only by the hooks, which do.
    let (level, msg) = member_status(&h, voters, true, false);
    crate::unit::status::set(level, &msg, false)
}
