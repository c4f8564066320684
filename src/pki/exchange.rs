//! The `certificates` endpoint's exchange in both protocols it speaks: the legacy one
//! (`authority`, easyrsa) and tls-certificates v4 (`provider`), the answer read in the one the
//! provider speaks.

use super::authority::{self, Provided, ENDPOINT};
use super::provider;
use crate::juju::{self, Bag};

/// Sends this unit's requests, in both protocols the `certificates` endpoint speaks (the
/// classic charm's legacy one: CN = its address, every address and 127.0.0.1 as SANs, name
/// `etcd_N`; and tls-certificates v4's CSRs, `provider`), and reads the answer of whichever
/// the provider speaks. `Ok(None)` without the relation or before a CA has answered; `Err`
/// names the relation value that cannot be used.
pub fn exchange(
    unit: &str,
    common_name: &str,
    names: &[String],
    st: Option<&mut crate::unit::LocalState>,
    peers: &mut crate::unit::peers::Peers,
    leader: bool,
) -> anyhow::Result<Result<Option<Provided>, String>> {
    let Some(rel) = juju::relation_ids(ENDPOINT)?.into_iter().next() else {
        return Ok(Ok(None));
    };
    let prefix = unit.replace('/', "_");
    let mut sans = names.to_vec();
    sans.sort();
    sans.dedup();
    let want = Bag::from([
        ("unit_name".to_string(), prefix.clone()),
        ("common_name".to_string(), common_name.to_string()),
        ("sans".to_string(), serde_json::to_string(&sans)?),
        ("certificate_name".to_string(), prefix.clone()),
    ]);
    let mine = juju::relation_get(&rel, unit, false)?;
    juju::relation_update(&rel, &mine, want)?;
    let remotes = juju::relation_list(&rel)?;
    // A classic unit being taken over (no state of this charm yet: `st` None) is related to
    // easyrsa, the only CA the classic charm speaks to: no v4 request.
    let Some(st) = st else {
        return authority::legacy_answer(&rel, remotes, &prefix, names);
    };
    let csr = provider::server_csr(st, unit, &sans)?;
    provider::request(&rel, &mine, &csr)?;
    let Some(remote_app) = remotes.first().and_then(|u| u.split('/').next()) else {
        return Ok(Ok(None));
    };
    let app_bag = juju::relation_get(&rel, remote_app, true)?;
    // A provider speaks v4 once it answered a unit's request: the leader then asks for the
    // shared client certificate too (easyrsa gives it without being asked).
    if provider::speaks_v4(&app_bag) {
        if leader {
            let app = unit.split('/').next().unwrap_or(unit);
            provider::leader_request(st, peers, &rel, app)?;
        }
        return provider::exchange(remote_app, &app_bag, &csr, &sans, peers);
    }
    authority::legacy_answer(&rel, remotes, &prefix, names)
}
