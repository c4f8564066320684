//! This unit's certificates: its CSRs, the leader's built-in CA (its key and the shared
//! client certificate in application-owned secrets) signing every unit's server CSR, the
//! leader's peer CA (its key in a secret of its own) signing every unit's peer CSR and
//! nothing else, the leader's step of a move between CAs on each side, and the files each
//! unit serves with.
//!
//! Must not: start or stop etcd (the reconcile restarts it in its turn), or read anything
//! but the peer view it is given and this unit's own files and secrets.

use crate::juju::{self, Bag};
use crate::pki::authority;
use crate::pki::{self, Ca, Profile};
use crate::unit::peers::Peers;
use crate::unit::peers::{Key, MemberKey, PeerBag};
use crate::unit::{member_name, now, LocalState};
use anyhow::Result;
use std::path::Path;

const CA_LABEL: &str = "etcd-ca";
const PEER_CA_LABEL: &str = "etcd-peer-ca";
const CLIENT_LABEL: &str = "etcd-client";
/// App databag key: the sha16 of the client certificate in the `etcd-client` secret, so
/// units whose files hold it need not read the secret at every hook.
pub(crate) const CLIENT_SHA: Key = Key::ClientCertSha;

/// Makes (or keeps) this unit's CSRs for its current addresses.
pub(crate) fn ensure_csrs(
    st: &mut LocalState,
    unit: &str,
    names: &[String],
) -> Result<(String, String)> {
    let mut out = vec![];
    let names_changed = st.csr_names != names;
    for p in [Profile::Server, Profile::Peer] {
        let csr_file = Path::new("/var/lib/etcd-charm").join(format!("{}.csr", p.name()));
        let cert_file = format!("{}.crt", p.name());
        out.push(kept_csr(
            st,
            &csr_file,
            &cert_file,
            p.name(),
            names_changed,
            "the leader",
            || {
                let key = pki::unit_key(p)?;
                Ok(pki::csr_for(&key, &member_name(unit), names)?)
            },
        )?);
    }
    st.csr_names = names.to_vec();
    Ok((out[0].clone(), out[1].clone()))
}

/// A CSR kept in `csr_file`, made anew by `make` when `names_changed`, or once per
/// certificate in `cert_file` (under the PKI dir) that is due for renewal, not once per hook
/// while the new one is awaited (`renewed_for[tag]` names the certificate a CSR was renewed
/// for). `asked`: whom the log line says the renewal asks.
pub(crate) fn kept_csr(
    st: &mut LocalState,
    csr_file: &Path,
    cert_file: &str,
    tag: &str,
    names_changed: bool,
    asked: &str,
    make: impl FnOnce() -> Result<String>,
) -> Result<String> {
    let (renew, cert_sha) = renewal_due(st, cert_file, tag)?;
    if let Some(c) = hostkit::fs::read_if_present(csr_file)? {
        if !names_changed && !renew {
            return Ok(c);
        }
    }
    if renew {
        juju::log(
            "INFO",
            &format!("{cert_file} is due for renewal; asking {asked} for a new certificate"),
        );
        st.renewed_for
            .insert(tag.to_string(), cert_sha.unwrap_or_default());
    }
    let c = make()?;
    pki::write_file(csr_file, c.as_bytes(), 0o644)?;
    Ok(c)
}

/// Whether the certificate in `file` (under the PKI dir) needs renewal and no request was
/// renewed for it yet (`renewed_for[tag]`), and its digest. No file: not due.
pub(crate) fn renewal_due(
    st: &LocalState,
    file: &str,
    tag: &str,
) -> Result<(bool, Option<String>)> {
    let Some(cert) = hostkit::fs::read_if_present(&pki::path(file))? else {
        return Ok((false, None));
    };
    let sha = pki::sha256_hex(cert.as_bytes());
    let due = pki::needs_renewal(&cert, now() as i64) && st.renewed_for.get(tag) != Some(&sha);
    Ok((due, Some(sha)))
}

/// Certificates on disk that have not expired (kept in use while a renewal is pending).
pub(crate) fn certs_on_disk() -> bool {
    ["ca.crt", "peer-ca.crt", "server.crt", "peer.crt"]
        .iter()
        .all(|f| pki::path(f).exists())
        && ["server.crt", "peer.crt"].iter().all(|f| {
            std::fs::read_to_string(pki::path(f))
                .ok()
                .and_then(|c| pki::not_after(&c).ok())
                .is_some_and(|t| t > now() as i64)
        })
}

/// A status for a certificate whose renewal is overdue.
pub(crate) fn overdue_certificate() -> Option<String> {
    ["server.crt", "peer.crt", "client.crt"]
        .iter()
        .find_map(|f| {
            let c = std::fs::read_to_string(pki::path(f)).ok()?;
            pki::renewal_overdue(&c, now() as i64).then(|| {
                format!("TLS certificate {f} expires soon and its renewal has not completed")
            })
        })
}

/// The client pair in the `etcd-client` secret.
fn client_pair() -> Result<Option<(String, String)>> {
    Ok(juju::secret_get_by_label(CLIENT_LABEL)?
        .and_then(|c| Some((c.get("client-cert")?.clone(), c.get("client-key")?.clone()))))
}

/// Whether client.crt (and its key) on disk are the pair the leader published the sha of.
fn client_is_current(published: Option<&str>) -> bool {
    published.is_some_and(|sha| {
        pki::path("client.key").exists()
            && std::fs::read_to_string(pki::path("client.crt"))
                .is_ok_and(|c| authority::sha16(&c) == sha)
    })
}

/// Why the leader makes a new shared client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientRenewal {
    /// on the members' policy: less than a third of its lifetime left
    Due,
    /// a client relation went: the application that held the pair is given no new one
    RelationGone,
}

/// The leader renews the shared client certificate (every `db`, `proxy` and `prometheus`
/// client's, and the packaged credentials') on the policy of the members' own (`Due`: when
/// less than a third of its lifetime, at most 30 days, is left), or at once when a client
/// relation went (`RelationGone`): a new pair from the built-in CA for `lifetime`. The old
/// one stays valid until it expires (etcd takes a revocation list only as a command-line
/// flag, which its config file turns off), so clients that have not fetched the new pair yet
/// keep working; the units serve and hand out the new one from the next hook.
pub(crate) fn renew_client(
    peers: &mut Peers,
    lifetime: time::Duration,
    why: ClientRenewal,
) -> Result<()> {
    if peers.new_client.is_some() || peers.app_get(Key::Ca).is_none() {
        return Ok(());
    }
    // The files hold the published pair on most hooks: no secret read to find it due.
    let current = if client_is_current(peers.app_get(CLIENT_SHA)) {
        std::fs::read_to_string(pki::path("client.crt")).ok()
    } else {
        client_pair()?.map(|(c, _)| c)
    };
    let Some(cert) = current else {
        return Ok(());
    };
    if why == ClientRenewal::Due && !pki::needs_renewal(&cert, now() as i64) {
        return Ok(());
    }
    // Only the built-in CA's pair is the charm's to renew (a provider's comes from it).
    let internal = peers.app_get(Key::Ca).unwrap_or_default().to_string();
    if !pki::issued_by(&cert, &internal).unwrap_or(false) {
        return Ok(());
    }
    let ca = leader_ca(peers, lifetime)?;
    let (cc, ck) = ca.issue(Profile::Client, "etcd-client", &[], &[], lifetime)?;
    let id = juju::secret_id_by_label(CLIENT_LABEL)?.ok_or_else(|| {
        anyhow::anyhow!("the client certificate's secret {CLIENT_LABEL:?} is missing")
    })?;
    juju::secret_set(
        &id,
        &Bag::from([
            ("client-cert".into(), cc.clone()),
            ("client-key".into(), ck.clone()),
        ]),
    )?;
    juju::log(
        "INFO",
        match why {
            ClientRenewal::Due => "renewed the shared client certificate (less than a third of its lifetime was left)",
            ClientRenewal::RelationGone => "rotated the shared client certificate: a client relation went; the remaining clients get the new pair over their relations",
        },
    );
    peers.app_set(CLIENT_SHA, &authority::sha16(&cc));
    peers.new_client = Some((cc, ck));
    Ok(())
}

/// The leader of an application deployed before `client-cert-sha` existed publishes it
/// once (one read of the secret), so the units stop reading the secret at every hook.
pub(crate) fn publish_client_sha(peers: &mut Peers) -> Result<()> {
    if peers.app_get(CLIENT_SHA).is_some() || peers.app_get(Key::Ca).is_none() {
        return Ok(());
    }
    if let Some((cert, _)) = client_pair()? {
        peers.app_set(CLIENT_SHA, &authority::sha16(&cert));
    }
    Ok(())
}

/// The leader's CA, created once; its key lives in an application-owned secret.
/// `lifetime`: the shared client certificate's, made with the CA.
pub(crate) fn leader_ca(peers: &mut Peers, lifetime: time::Duration) -> Result<Ca> {
    let (ca, created) = kept_ca(peers, CA_LABEL, Key::Ca, "etcd-charm CA", "CA")?;
    if created {
        let (cc, ck) = ca.issue(Profile::Client, "etcd-client", &[], &[], lifetime)?;
        juju::secret_add(
            CLIENT_LABEL,
            &Bag::from([
                ("client-cert".into(), cc.clone()),
                ("client-key".into(), ck.clone()),
            ]),
        )?;
        peers.app_set(CLIENT_SHA, &authority::sha16(&cc));
        peers.new_client = Some((cc, ck));
    }
    Ok(ca)
}

/// The leader's peer CA, created once (also in a deployment from before it): it signs the
/// members' peer certificates and nothing else, so the peer port trusts no other
/// certificate. Its key lives in an application-owned secret of its own.
pub(crate) fn leader_peer_ca(peers: &mut Peers) -> Result<Ca> {
    kept_ca(
        peers,
        PEER_CA_LABEL,
        Key::PeerCa,
        "etcd-charm peer CA",
        "peer CA",
    )
    .map(|(ca, _)| ca)
}

/// A CA the leader keeps: its key in the application secret `label`, its certificate
/// published under the app key `app_key`; made (named `cn`) when neither exists yet, and
/// then said so (`true`). A published CA whose secret is gone is an error, never a new CA.
fn kept_ca(
    peers: &mut Peers,
    label: &str,
    app_key: Key,
    cn: &str,
    what: &str,
) -> Result<(Ca, bool)> {
    if let Some(b) = juju::secret_get_by_label(label)? {
        if let (Some(c), Some(k)) = (b.get("ca-cert"), b.get("ca-key")) {
            peers.app_set(app_key, c);
            let ca = Ca {
                cert_pem: c.clone(),
                key_pem: k.clone(),
            };
            return Ok((ca, false));
        }
    }
    if peers.app_get(app_key).is_some() {
        anyhow::bail!("the {what} key secret {label:?} is missing but a {what} is published; restore the secret or redeploy");
    }
    let ca = Ca::create(cn)?;
    juju::secret_add(
        label,
        &Bag::from([
            ("ca-cert".into(), ca.cert_pem.clone()),
            ("ca-key".into(), ca.key_pem.clone()),
        ]),
    )?;
    peers.app_set(app_key, &ca.cert_pem);
    Ok((ca, true))
}

/// The app keys of a unit's signed certificate and of the CSR digest it was signed for:
/// server certificates from the built-in CA, peer certificates from the peer CA (keys of
/// their own, so a peer certificate the built-in CA signed before the peer CA existed is
/// never taken for one).
fn signed_keys(p: Profile, name: &str) -> (MemberKey, MemberKey) {
    let (cert, sha) = match p {
        Profile::Peer => (format!("peer-cert.{name}"), format!("peer-csr-sha.{name}")),
        _ => (
            format!("cert-{}.{name}", p.name()),
            format!("csr-sha-{}.{name}", p.name()),
        ),
    };
    (MemberKey(cert), MemberKey(sha))
}

/// The certificate the leader signed for member `name`'s current `csr` of profile `p`, once
/// it has (a certificate signed for an earlier CSR is not it).
fn signed_cert<'p>(peers: &'p Peers, p: Profile, name: &str, csr: &str) -> Option<&'p str> {
    let (cert_key, sha_key) = signed_keys(p, name);
    let sha = pki::sha256_hex(csr.as_bytes());
    (peers.app_get(&sha_key) == Some(sha.as_str()))
        .then(|| peers.app_get(&cert_key))
        .flatten()
}

/// Signs every unit's CSRs whose names check out against what Juju says its addresses are.
/// The CA (created on first use) is read from its secret only when something needs signing:
/// most hooks sign nothing and spare the secret-get.
pub(crate) fn leader_sign(
    peers: &mut Peers,
    own_unit: &str,
    own_addresses: &[String],
    lifetime: time::Duration,
) -> Result<()> {
    // (unit, member name, profile, CSR, its sha256, the names the unit may have)
    let mut wanted = vec![];
    for (unit, bag) in &peers.units {
        let Some(name) = bag.peer(Key::MemberName) else {
            continue;
        };
        let mut allowed: Vec<String> = ["ingress-address", "private-address"]
            .iter()
            .filter_map(|k| bag.get(*k).cloned())
            .collect();
        if unit == own_unit {
            allowed.extend(own_addresses.iter().cloned());
        }
        for p in [Profile::Server, Profile::Peer] {
            let Some(csr) = bag.get(&format!("csr-{}", p.name())) else {
                continue;
            };
            let sha = pki::sha256_hex(csr.as_bytes());
            if peers.app_get(&signed_keys(p, name).1) != Some(sha.as_str()) {
                wanted.push((
                    unit.clone(),
                    name.clone(),
                    p,
                    csr.clone(),
                    sha,
                    allowed.clone(),
                ));
            }
        }
    }
    if wanted.is_empty() && peers.app_get(Key::Ca).is_some() && peers.app_get(Key::PeerCa).is_some()
    {
        return Ok(());
    }
    let ca = leader_ca(peers, lifetime)?;
    let peer_ca = leader_peer_ca(peers)?;
    for (unit, name, p, csr, sha, allowed) in wanted {
        let signer = if p == Profile::Peer { &peer_ca } else { &ca };
        match signer.sign(&csr, p, &name, &allowed, lifetime) {
            Ok(cert) => {
                let (cert_key, sha_key) = signed_keys(p, &name);
                peers.app_set(&cert_key, &cert);
                peers.app_set(&sha_key, &sha);
            }
            Err(e) => juju::log(
                "WARNING",
                &format!("not signing the {} certificate of {unit}: {e}", p.name()),
            ),
        }
    }
    Ok(())
}

/// The leader's step of a CA move (authority::plan) on each side: the client port's towards
/// the `certificates` relation's CA when it answered, towards the built-in CA otherwise; the
/// peer port's towards the peer CA (a move only for a deployment from before it).
pub(crate) fn plan_ca_move(
    peers: &mut Peers,
    internal: &str,
    provided: Option<&authority::Provided>,
) {
    // While a classic member runs (a takeover in progress) no CA moves: it trusts its
    // own CA alone and restarts for nothing this charm says.
    if peers
        .units
        .values()
        .any(|b| b.peer(Key::Phase).map(String::as_str) == Some(crate::unit::peers::CLASSIC_PHASE))
    {
        return;
    }
    let target = provided
        .map(|p| p.ca.as_str())
        .unwrap_or(internal)
        .to_string();
    plan_side(peers, authority::Side::CLIENT, &target, internal);
    if let Some(peer_ca) = peers.app_get(Key::PeerCa).map(String::from) {
        plan_side(peers, authority::Side::PEER, &peer_ca, internal);
    }
}

/// What a side's app keys say, with the defaults of a deployment from before them: the peer
/// port trusted what the client port trusts, and its certificates came from the same CA.
pub(crate) fn side_keys<'p>(
    peers: &'p Peers,
    side: authority::Side,
    internal: &'p str,
) -> (&'p str, &'p str) {
    let client = (
        peers.app_get(Key::Trust).unwrap_or(internal),
        peers.app_get(Key::IssuerCa).unwrap_or(internal),
    );
    if side == authority::Side::CLIENT {
        return client;
    }
    (
        peers.app_get(side.trust).unwrap_or(client.0),
        peers.app_get(side.issuer).unwrap_or(client.1),
    )
}

fn plan_side(peers: &mut Peers, side: authority::Side, target: &str, internal: &str) {
    let (trust, issuer) = side_keys(peers, side, internal);
    let (trust, issuer) = (trust.to_string(), issuer.to_string());
    let started: Vec<authority::UnitTls> = peers.started().map(|(_, b)| side.unit(b)).collect();
    let plan = authority::plan(target, &issuer, &trust, &started, !started.is_empty());
    if plan.step.as_deref() != peers.app_get(side.step) {
        let what = side.label();
        juju::log(
            "INFO",
            &match plan.step.as_deref() {
                Some(step) => format!("{what}{step}"),
                None => format!("{what}CA move done: one CA trusted"),
            },
        );
    }
    peers.app_set(side.trust, &plan.trust);
    peers.app_set(side.issuer, &plan.issuer_ca);
    peers.app_set(side.step, plan.step.as_deref().unwrap_or(""));
}

/// Writes this unit's certificates: `ca.crt` is the bundle the leader says the client port
/// trusts, `peer-ca.crt` the one the peer port trusts; the server and client certificates
/// are those of the CA that issues now (the built-in CA's once its leader signed this unit's
/// current CSR, the `certificates` relation's once it answered), the peer certificate the
/// peer CA's. Moving to another CA's certificates waits for this unit's turn on that side
/// (`authority::my_turn`). Returns whether the unit has usable certificates.
pub(crate) fn install_certs(
    peers: &Peers,
    unit: &str,
    name: &str,
    csrs: &(String, String),
    provided: Option<&authority::Provided>,
) -> Result<bool> {
    let Some(internal) = peers.app_get(Key::Ca) else {
        return Ok(false);
    };
    let (trust, issuer) = side_keys(peers, authority::Side::CLIENT, internal);
    let (peer_trust, peer_issuer) = side_keys(peers, authority::Side::PEER, internal);
    pki::update_file(
        &pki::path(authority::Side::CLIENT.bundle_file),
        trust,
        0o644,
    )?;
    pki::update_file(
        &pki::path(authority::Side::PEER.bundle_file),
        peer_trust,
        0o644,
    )?;
    let read = |f: &str| std::fs::read_to_string(pki::path(f));
    // (file base name, certificate, key) for each pair to serve with
    let Some(mut pairs) = client_side_pairs(peers, name, csrs, provided, issuer, internal)? else {
        return Ok(certs_on_disk());
    };
    // The peer certificate: the peer CA's once the peer side issues from it. Before that (a
    // deployment from before the peer CA, moving to it) the one on disk serves.
    let mut peer_pair = None;
    if Some(peer_issuer) == peers.app_get(Key::PeerCa) {
        let Some(cert) = signed_cert(peers, Profile::Peer, name, &csrs.1) else {
            return Ok(certs_on_disk());
        };
        peer_pair = Some((cert.to_string(), read("csr-peer.key")?));
    } else if !pki::path("peer.crt").exists() {
        return Ok(false);
    }
    let started = |side: authority::Side| -> Vec<(String, authority::UnitTls)> {
        peers
            .started()
            .filter(|(u, _)| *u != unit)
            .map(|(u, b)| (u.clone(), side.unit(b)))
            .collect()
    };
    // Another CA's certificates on disk: they go in this unit's turn only.
    let in_turn = |side: authority::Side, issuer: &str| {
        read(side.cert_file)
            .ok()
            .is_some_and(|c| pki::issued_by(&c, issuer).unwrap_or(false))
            || authority::my_turn(unit, &authority::sha16(issuer), &started(side))
    };
    if !in_turn(authority::Side::CLIENT, issuer) {
        pairs.clear();
    }
    if let Some((cert, key)) = peer_pair {
        if in_turn(authority::Side::PEER, peer_issuer) {
            pairs.push(("peer", cert, key));
        }
    }
    // etcd reads each pair on every new connection: a handshake that falls between the two
    // writes fails once and the client dials again.
    for (base, cert, key) in pairs {
        pki::update_file(&pki::path(&format!("{base}.crt")), &cert, 0o644)?;
        pki::update_file(&pki::path(&format!("{base}.key")), &key, 0o600)?;
    }
    Ok(certs_on_disk())
}

/// The pairs the client port serves with (server, and the shared client pair) from the CA
/// that issues now: the built-in one's signed certificates, or what the `certificates`
/// relation provided. None when they are not there yet (the files on disk serve).
#[allow(clippy::type_complexity)]
fn client_side_pairs(
    peers: &Peers,
    name: &str,
    csrs: &(String, String),
    provided: Option<&authority::Provided>,
    issuer: &str,
    internal: &str,
) -> Result<Option<Vec<(&'static str, String, String)>>> {
    let read = |f: &str| std::fs::read_to_string(pki::path(f));
    let mut pairs: Vec<(&str, String, String)> = vec![];
    if issuer == internal {
        let Some(cert) = signed_cert(peers, Profile::Server, name, &csrs.0) else {
            return Ok(None);
        };
        pairs.push(("server", cert.to_string(), read("csr-server.key")?));
        // Created in this very hook (the leader's first), the secret cannot be read yet:
        // the pair the leader holds serves, so no unit reports healthy without one.
        let client = match &peers.new_client {
            Some(pair) => Some(pair.clone()),
            // The files hold the published pair already: nothing to read or write.
            None if client_is_current(peers.app_get(CLIENT_SHA)) => None,
            None => client_pair()?,
        };
        if let Some((cert, key)) = client {
            pairs.push(("client", cert, key));
        }
    } else {
        match provided {
            Some(authority::Provided {
                ca,
                server: Some((cert, key)),
                client: Some((ccert, ckey)),
                ..
            }) if ca == issuer => {
                pairs.push(("server", cert.clone(), key.clone()));
                pairs.push(("client", ccert.clone(), ckey.clone()));
            }
            _ => return Ok(None),
        }
    }
    Ok(Some(pairs))
}
