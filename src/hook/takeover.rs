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
use crate::ops::classic::{self, Member};
use crate::pki::authority;
use crate::unit::peers::Key;
use crate::unit::status::Level;
use crate::unit::{LocalState, PEER};
use anyhow::Result;

/// The application's key naming the unit whose member is being taken over.
pub const TURN: &str = "takeover-turn";
use classic::PHASE;

/// What an action says on a machine whose classic member is not this charm's yet.
pub const NOT_YET: &str = "this machine runs the classic etcd charm's etcd, not taken over \
    yet: actions run once its turn came (juju status says where the takeover is)";

/// The peer relation and every unit's databag there (this unit's included).
struct Peers {
    rel: String,
    units: Vec<(String, Bag)>,
    app: Bag,
}

impl Peers {
    fn read(unit: &str) -> Result<Option<Peers>> {
        let Some(rel) = juju::relation_ids(PEER)?.into_iter().next() else {
            return Ok(None);
        };
        let mut units = vec![(unit.to_string(), juju::relation_get(&rel, unit, false)?)];
        for u in juju::relation_list(&rel)? {
            let bag = juju::relation_get(&rel, &u, false)?;
            units.push((u, bag));
        }
        let app_name = unit.split('/').next().unwrap_or_default();
        let app = juju::relation_get(&rel, app_name, true)?;
        Ok(Some(Peers { rel, units, app }))
    }
    fn phase(&self, unit: &str) -> Option<&str> {
        self.units
            .iter()
            .find(|(u, _)| u == unit)
            .and_then(|(_, b)| b.get(Key::Phase.as_str()))
            .map(String::as_str)
    }
    fn classic(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .units
            .iter()
            .filter(|(_, b)| b.get(Key::Phase.as_str()).map(String::as_str) == Some(PHASE))
            .map(|(u, _)| u.as_str())
            .collect();
        v.sort_by_key(|u| crate::ops::membership::plan::unit_number(u));
        v
    }
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
    let Some(peers) = Peers::read(&ctx.unit)? else {
        return Ok(!untaken);
    };
    if let Some(m) = &member {
        publish(&peers, &ctx.unit, m)?;
    }
    // The classic units as the leader sees them, this one included while it is one.
    let peers = Peers::read(&ctx.unit)?.unwrap_or(peers);
    let provided = match &member {
        Some(_) => exchange(&ctx.unit)?,
        None => None,
    };
    // This unit's own takeover, cut short: its turn again, without the health gate (its
    // member may be the one that is down).
    let resuming = member.is_some() && marked;
    let held = match leader {
        true => lead(
            &peers,
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
    let turn = juju::relation_get(&peers.rel, app_name(&ctx.unit), true)?
        .get(TURN)
        .cloned();
    if turn.as_deref() != Some(ctx.unit.as_str()) {
        let classic = peers.classic().len();
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

fn app_name(unit: &str) -> &str {
    unit.split('/').next().unwrap_or_default()
}

fn blocked(msg: &str) -> Result<()> {
    Ok(juju::status_set(
        Level::Blocked.as_str(),
        &juju::bounded(msg, 1024),
        false,
    )?)
}

/// The classic member in this unit's peer data: `phase` classic, its name and URLs.
fn publish(peers: &Peers, unit: &str, m: &Member) -> Result<()> {
    let have = peers
        .units
        .iter()
        .find(|(u, _)| u == unit)
        .map(|(_, b)| b.clone())
        .unwrap_or_default();
    let want = Bag::from([
        (Key::Phase.into(), PHASE.to_string()),
        (Key::MemberName.into(), m.name.clone()),
        (Key::PeerUrl.into(), m.peer_url.clone()),
        (Key::ClientUrl.into(), m.client_url.clone()),
    ]);
    Ok(juju::relation_update(&peers.rel, &have, want)?)
}

/// What the CA on the `certificates` relation issued for this unit (the request made with
/// the names this charm's certificates carry), when it did and it checks out.
fn exchange(unit: &str) -> Result<Option<authority::Provided>> {
    let Some(address) = juju::network_ingress(PEER)?.first().cloned() else {
        return Ok(None);
    };
    let names = vec![address.clone(), "127.0.0.1".to_string()];
    Ok(match authority::exchange(unit, &address, &names)? {
        Ok(Some(p)) if p.server.is_some() && p.client.is_some() => Some(p),
        Ok(_) => None,
        Err(msg) => {
            juju::log("WARNING", &msg);
            None
        }
    })
}

/// The leader's turns: the next one granted once the unit of the last runs as this charm's
/// member and every member answers healthy; cleared when no classic unit is left.
fn lead(
    peers: &Peers,
    unit: &str,
    member: Option<&Member>,
    provided: Option<&authority::Provided>,
    resuming: bool,
) -> Result<Option<String>> {
    let classic = peers.classic();
    let turn = peers.app.get(TURN).filter(|t| !t.is_empty());
    if classic.is_empty() {
        if turn.is_some() {
            juju::relation_set(&peers.rel, &Bag::from([(TURN.into(), String::new())]), true)?;
            juju::log("INFO", "every classic member is taken over");
        }
        crate::unit::remove_if_present(std::path::Path::new(classic::MARKER))?;
        return Ok(None);
    }
    hostkit::fs::write_file(std::path::Path::new(classic::MARKER), b"", 0o644)?;
    if let Some(t) = turn.filter(|_| !resuming) {
        let live = peers.units.iter().any(|(u, _)| u == t);
        if live && peers.phase(t) != Some("started") {
            return Ok(Some(format!("the takeover of {t} runs")));
        }
    }
    let port = juju::config()?
        .get("port")
        .and_then(|p| p.as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(2379);
    let health = match resuming {
        true => Ok(0),
        false => classic::cluster_healthy(&classic::credentials(member.is_some()), port),
    };
    if let Err(why) = health {
        let why = format!("the next takeover waits for a healthy cluster: {why}");
        juju::log("INFO", &why);
        return Ok(Some(why));
    }
    let next = if member.is_some() { unit } else { classic[0] };
    let mut app = Bag::from([(TURN.to_string(), next.to_string())]);
    if peers.app.get(Key::Bootstrap.as_str()).is_none() {
        let Some(seed) = seed(member, provided)? else {
            return Ok(Some(
                "waiting for the CA on the certificates relation".into(),
            ));
        };
        app.extend(seed);
    }
    juju::log("INFO", &format!("taking over the classic member of {next}"));
    juju::relation_set(&peers.rel, &app, true)?;
    Ok(None)
}

/// What this charm's leader writes at the bootstrap, from the classic cluster: its token
/// and initial cluster (the leader's classic config, or its state once taken over), and
/// the CA both ports trust and issue from. None until the CA answered.
fn seed(member: Option<&Member>, provided: Option<&authority::Provided>) -> Result<Option<Bag>> {
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
        None => match std::fs::read_to_string(crate::pki::path("ca.crt")) {
            Ok(c) => c,
            Err(_) => return Ok(None),
        },
    };
    let names: Vec<&str> = initial
        .split(',')
        .filter_map(|e| e.split('=').next())
        .collect();
    Ok(Some(Bag::from([
        (Key::Token.into(), token.clone()),
        (Key::InitialCluster.into(), initial.clone()),
        (Key::Bootstrap.into(), names.join(",")),
        (Key::Epoch.into(), "1".to_string()),
        (Key::Trust.into(), ca.clone()),
        (Key::IssuerCa.into(), ca.clone()),
        (Key::PeerTrust.into(), ca.clone()),
        (Key::PeerIssuerCa.into(), ca),
    ])))
}
