//! Taking over a running classic etcd deployment after `juju refresh etcd --switch` to
//! this charm, one member at a time (docs/OPERATIONS.md, "Moving from the classic charm").
//!
//! A unit whose machine holds the classic member (`ops::classic::untaken`) publishes that
//! member in the peer relation (`phase` "classic", its name and URLs, so no leader takes
//! it for a stray) and touches nothing else. The leader grants one turn at a time
//! (`takeover-turn` in the application's data): first to itself, then to the lowest
//! numbered classic unit, each only once the unit of the turn before runs as this charm's
//! member and every member of the cluster answers healthy. A unit in its turn waits for
//! the CA on the `certificates` relation to issue its certificates, then `adopt`s the
//! member and goes on as any unit of this charm; its member starts from its data. When it
//! grants the first turn the leader also writes what this charm's leader would have
//! written at the bootstrap (the token, the initial cluster, the epoch) and the CA both
//! ports trust and issue from (the one the classic members trust); the peer port moves to
//! the charm's own peer CA once no classic unit is left (`certs::plan_ca_move` waits).

use crate::juju::{self, Bag, Context};
use crate::ops::classic::{self, Member, PHASE};
use crate::pki::authority;
use crate::unit::peers::{set_key, Key, PeerBag, Peers};
use crate::unit::status::Level;
use crate::unit::{LocalState, PEER};
use anyhow::Result;

/// What an action says on a machine whose classic member is not this charm's yet.
pub const NOT_YET: &str = "this machine runs the classic etcd charm's etcd, not taken over \
    yet: actions run once its turn came (juju status says where the takeover is)";

/// The peer relation as the reconcile reads it, this unit's databag included.
fn read_peers(ctx: &Context) -> Result<Option<Peers>> {
    let Some(rel) = juju::relation_ids(PEER)?.into_iter().next() else {
        return Ok(None);
    };
    let mut peers = crate::hook::reconcile::read_peers(&rel, ctx)?;
    let mine = juju::relation_get(&rel, &ctx.unit, false)?;
    peers.units.insert(ctx.unit.clone(), mine);
    Ok(Some(peers))
}

fn phase<'p>(peers: &'p Peers, unit: &str) -> Option<&'p str> {
    peers
        .units
        .get(unit)
        .and_then(|b| b.peer(Key::Phase))
        .map(String::as_str)
}

/// The units whose machine still runs a classic member, lowest number first.
fn classic_units(peers: &Peers) -> Vec<&str> {
    let mut v: Vec<&str> = peers
        .units
        .keys()
        .filter(|u| phase(peers, u) == Some(PHASE))
        .map(String::as_str)
        .collect();
    v.sort_by_key(|u| crate::ops::membership::plan::unit_number(u));
    v
}

/// Runs before everything else of a hook. True: the machine is this charm's (taken over
/// now, before, or never classic) and the hook goes on.
pub fn step(ctx: &Context) -> Result<bool> {
    let untaken = classic::untaken()?;
    // Nothing more to ask (not even whether this unit leads) where no takeover runs: a
    // unit that took its member over keeps a marker until the leader sees none is left,
    // and a new leader looks once.
    let marked = std::path::Path::new(classic::MARKER)
        .try_exists()
        .map_err(|e| anyhow::anyhow!("looking for {}: {e}", classic::MARKER))?;
    if !untaken && !marked && !ctx.is(crate::juju::Hook::LeaderElected) {
        return Ok(true);
    }
    let leader = juju::is_leader()?;
    if !untaken && !leader {
        crate::unit::remove_if_present(std::path::Path::new(classic::MARKER))?;
        return Ok(true);
    }
    let member = if untaken {
        match classic::read(&ctx.unit).and_then(|m| classic::check_version().map(|_| m)) {
            Ok(m) => Some(m),
            Err(e) => {
                blocked(&format!("{e:#}; {}", classic::SWITCH_BACK))?;
                return Ok(false);
            }
        }
    } else {
        None
    };
    let Some(mut peers) = read_peers(ctx)? else {
        return Ok(!untaken);
    };
    if let Some(m) = &member {
        publish(&mut peers, &ctx.unit, m)?;
    }
    let provided = match &member {
        Some(_) => exchange(&ctx.unit, &mut peers, leader)?,
        None => None,
    };
    // This unit's own takeover, cut short: its turn again, without the health gate (its
    // member may be the one that is down).
    let resuming = member.is_some() && marked;
    let held = match leader {
        true => lead(
            &mut peers,
            &ctx.unit,
            member.as_ref(),
            provided.as_ref(),
            resuming,
        )?,
        false => None,
    };
    match member {
        Some(m) => in_turn(ctx, &peers, &m, provided, held),
        None => Ok(true),
    }
}

/// A classic unit: its member taken over when the turn is its own and the CA answered.
/// True: taken over now.
fn in_turn(
    ctx: &Context,
    peers: &Peers,
    member: &Member,
    provided: Option<authority::Provided>,
    held: Option<String>,
) -> Result<bool> {
    if peers.app_get(Key::TakeoverTurn) != Some(ctx.unit.as_str()) {
        let classic = classic_units(peers).len();
        // The leader says what holds the next turn up.
        let why = held.map(|h| format!("; {h}")).unwrap_or_default();
        juju::status_set(
            Level::Waiting.as_str(),
            &juju::bounded(
                &format!(
                    "Waiting for its turn to be taken over: the classic member {} serves \
                     meanwhile ({} of {} units are this charm's){why}",
                    member.name,
                    peers.units.len() - classic,
                    peers.units.len()
                ),
                1024,
            ),
            false,
        )?;
        return Ok(false);
    }
    let Some(provided) = provided else {
        juju::status_set(
            Level::Waiting.as_str(),
            "Waiting for the CA on the certificates relation to issue this unit's \
             certificates before its takeover",
            false,
        )?;
        return Ok(false);
    };
    // The snap delivery's data directory (this unit's install record is written by the
    // takeover itself), or the `data` volume's.
    let data = match juju::storage_location("data")? {
        Some(dev) => crate::unit::volume::data_dir_on(&dev)?,
        None => etcdkit::SNAP_DATA_DIR.to_string(),
    };
    drop_classic_requests(&ctx.unit)?;
    let resource = juju::resource_get("etcd")?;
    classic::adopt(
        member,
        &provided,
        &data,
        resource.as_deref().map(std::path::Path::new),
    )?;
    Ok(true)
}

/// The classic leader's scrape job and dashboard requests (`request_<uuid>` in its unit
/// data on `prometheus` and `grafana`) removed: this charm publishes its own, and the old
/// ones would leave Prometheus and Grafana a second job and dashboard. Run while the unit
/// is still classic, so a takeover cut short does it again.
fn drop_classic_requests(unit: &str) -> Result<()> {
    for endpoint in ["prometheus", "grafana"] {
        for rel in juju::relation_ids(endpoint)? {
            let gone: Bag = juju::relation_get(&rel, unit, false)?
                .into_keys()
                .filter(|k| {
                    k.starts_with("request_") && k != crate::relations::clients::DASHBOARD_REQUEST
                })
                .map(|k| (k, String::new()))
                .collect();
            juju::relation_set(&rel, &gone, false)?;
        }
    }
    Ok(())
}

fn blocked(msg: &str) -> Result<()> {
    Ok(juju::status_set(
        Level::Blocked.as_str(),
        &juju::bounded(msg, 1024),
        false,
    )?)
}

/// The classic member in this unit's peer data: `phase` classic, its name and URLs (the
/// view the leader reads in this hook sees them too).
fn publish(peers: &mut Peers, unit: &str, m: &Member) -> Result<()> {
    let mut writes = Bag::new();
    let bag = peers.units.entry(unit.to_string()).or_default();
    for (k, v) in [
        (Key::Phase, PHASE),
        (Key::MemberName, &m.name),
        (Key::PeerUrl, &m.peer_url),
        (Key::ClientUrl, &m.client_url),
    ] {
        set_key(bag, &mut writes, k.as_str(), v);
    }
    Ok(juju::relation_set(&peers.rel, &writes, false)?)
}

/// What the CA on the `certificates` relation issued for this unit (the request made with
/// the names this charm's certificates carry), when it did and it checks out.
fn exchange(unit: &str, peers: &mut Peers, leader: bool) -> Result<Option<authority::Provided>> {
    let Some(address) = juju::network_ingress(PEER)?.first().cloned() else {
        return Ok(None);
    };
    let names = vec![address.clone(), "127.0.0.1".to_string()];
    // No LocalState here: its file is what marks a machine as this charm's (untaken()).
    Ok(
        match crate::pki::exchange::exchange(unit, &address, &names, None, peers, leader)? {
            Ok(Some(p)) if p.server.is_some() && p.client.is_some() => Some(p),
            Ok(_) => None,
            Err(msg) => {
                juju::log("WARNING", &msg);
                None
            }
        },
    )
}

/// The leader's turns: the next one granted once the unit of the last runs as this charm's
/// member and every member answers healthy; cleared when no classic unit is left.
fn lead(
    peers: &mut Peers,
    unit: &str,
    member: Option<&Member>,
    provided: Option<&authority::Provided>,
    resuming: bool,
) -> Result<Option<String>> {
    let classic: Vec<String> = classic_units(peers).into_iter().map(String::from).collect();
    if classic.is_empty() {
        if peers.app_get(Key::TakeoverTurn).is_some() {
            peers.app_set(Key::TakeoverTurn, "");
            juju::log("INFO", "every classic member is taken over");
        }
        crate::unit::remove_if_present(std::path::Path::new(classic::MARKER))?;
        juju::relation_set(&peers.rel, &peers.app_writes, true)?;
        return Ok(None);
    }
    hostkit::fs::write_file(std::path::Path::new(classic::MARKER), b"", 0o644)?;
    if let Some(t) = peers.app_get(Key::TakeoverTurn).filter(|_| !resuming) {
        if peers.units.contains_key(t) && phase(peers, t) != Some("started") {
            return Ok(Some(format!("the takeover of {t} runs")));
        }
    }
    let port = match crate::config::Config::parse(&juju::config()?) {
        Ok(cfg) => cfg.port,
        Err(e) => {
            return Ok(Some(format!(
                "no takeover while the config is refused: {e}"
            )))
        }
    };
    let health = match resuming {
        true => Ok(0),
        false => classic::cluster_healthy(&classic::credentials(member.is_some()), port),
    };
    if let Err(why) = health {
        let why = format!("the next takeover waits for a healthy cluster: {why}");
        juju::log("INFO", &why);
        return Ok(Some(why));
    }
    let next = if member.is_some() { unit } else { &classic[0] };
    if peers.app_get(Key::Bootstrap).is_none() {
        let Some(seed) = seed(member, provided)? else {
            return Ok(Some(
                "waiting for the CA on the certificates relation".into(),
            ));
        };
        for (k, v) in seed {
            peers.app_set(k, &v);
        }
    }
    peers.app_set(Key::TakeoverTurn, next);
    juju::log("INFO", &format!("taking over the classic member of {next}"));
    juju::relation_set(&peers.rel, &peers.app_writes, true)?;
    Ok(None)
}

/// What this charm's leader writes at the bootstrap, from the classic cluster: its token
/// and initial cluster (the leader's classic config, or its state once taken over), and
/// the CA both ports trust and issue from. None until the CA answered.
fn seed(
    member: Option<&Member>,
    provided: Option<&authority::Provided>,
) -> Result<Option<Vec<(Key, String)>>> {
    let (token, initial) = match member {
        Some(m) => (m.token.clone(), m.initial_cluster.clone()),
        None => {
            let st = LocalState::load()?;
            match (st.token, st.initial_cluster) {
                (Some(t), Some(i)) => (t, i),
                _ => return Ok(None),
            }
        }
    };
    let ca = match provided {
        Some(p) => authority::bundle(&authority::split(&p.ca)),
        // Taken over already: the CA its ports trust, on disk. A failure to read it is an
        // error, never "no CA yet".
        None => {
            let p = crate::pki::path("ca.crt");
            match std::fs::read_to_string(&p) {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => anyhow::bail!("reading {}: {e}", p.display()),
            }
        }
    };
    let names: Vec<&str> = initial
        .split(',')
        .filter_map(|e| e.split('=').next())
        .collect();
    Ok(Some(vec![
        (Key::Token, token),
        (Key::Bootstrap, names.join(",")),
        (Key::InitialCluster, initial),
        (Key::Epoch, "1".to_string()),
        (Key::Trust, ca.clone()),
        (Key::IssuerCa, ca.clone()),
        (Key::PeerTrust, ca.clone()),
        (Key::PeerIssuerCa, ca),
    ]))
}
