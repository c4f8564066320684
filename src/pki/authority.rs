//! Which CA the application's certificates come from: the built-in CA, or the CA on the
//! `certificates` relation (easyrsa, the legacy `tls-certificates` interface, anchor-charms
//! §3.1), and the move between the two while the cluster keeps serving:
//!
//! 1. trust both: every member restarts, one at a time, with a bundle of the old and the
//!    new CA (etcd reads its trusted CAs only when it starts);
//! 2. new certificates, one unit at a time (etcd reloads certificate files on every new
//!    connection, so this needs no restart), while both CAs are trusted;
//! 3. drop the old CA: the bundle shrinks to the new CA and the members restart once more.
//!
//! The leader decides each step from what every unit reports in its peer databag
//! (`trust-running`: the bundle its etcd started with; `issuer-in-use`: the CA of the
//! certificates it serves with; `issuer-verified`: that CA once its member answered healthy
//! serving with them); the app databag carries the decision (`trust`, `issuer-ca`). A unit
//! takes the new certificates only when every unit before it serves with them and answered
//! healthy so, and the old CA goes only once every unit did: one healthy unit at a time.
//!
//! The peer port (2380) has a side of its own (`Side::PEER`): it trusts the charm's peer CA
//! alone, which signs nothing but members' peer certificates, so no client certificate (the
//! shared `db` one, or anything a related CA issued) is accepted there. Deployments from
//! before it move to it by the same three steps.

use crate::juju::{self, Bag};
use crate::pki;
use crate::unit::peers::{Key, PeerBag};
use std::collections::BTreeSet;

pub const ENDPOINT: &str = "certificates";

/// A short digest of a PEM text, as units report it.
pub fn sha16(pem: &str) -> String {
    pki::sha256_hex(pem.as_bytes())[..16].to_string()
}

/// The certificates of a PEM bundle, each ending in a newline.
pub fn split(bundle: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut cur = String::new();
    for line in bundle.lines() {
        if line.starts_with("-----BEGIN") {
            cur.clear();
        }
        cur.push_str(line.trim_end());
        cur.push('\n');
        if line.starts_with("-----END") {
            out.insert(std::mem::take(&mut cur));
        }
    }
    out
}

/// One bundle of CAs, in a fixed order whatever order they were found in.
pub fn bundle(cas: &BTreeSet<String>) -> String {
    cas.iter().map(String::as_str).collect()
}

/// What the CA on the `certificates` relation gave this unit, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Provided {
    pub ca: String,
    /// this unit's server certificate and key (used on the client and the peer port)
    pub server: Option<(String, String)>,
    /// the global client certificate and key (the charm's `db` clients get it)
    pub client: Option<(String, String)>,
    /// why this unit waits for the provider (a revoked certificate), for its status
    pub note: Option<String>,
}

/// Whether the application is related to a CA over `certificates`.
pub fn related() -> anyhow::Result<bool> {
    Ok(!juju::relation_ids(ENDPOINT)?.is_empty())
}

/// The legacy answer: the first remote unit with a `ca`, checked (`read_answer`).
pub(super) fn legacy_answer(
    rel: &str,
    remotes: Vec<String>,
    prefix: &str,
    names: &[String],
) -> anyhow::Result<Result<Option<Provided>, String>> {
    let mut answers = vec![];
    for remote in remotes {
        let bag = juju::relation_get(rel, &remote, false)?;
        if bag.peer(Key::Ca).is_some_and(|c| !c.is_empty()) {
            answers.push((remote, bag));
        }
    }
    let Some((remote, bag)) = answers.into_iter().next() else {
        return Ok(Ok(None));
    };
    Ok(read_answer(
        &remote,
        prefix,
        &bag,
        names,
        crate::unit::now() as i64,
    ))
}

/// The CA a provider gave: one PEM certificate with CA:TRUE, as a bundle of one (the text
/// the units compare). Err names the provider.
pub fn check_ca(remote: &str, ca: &str) -> Result<String, String> {
    let cas = split(ca);
    if cas.len() != 1 || pki::common_name(ca).is_err() {
        return Err(format!(
            "the certificates relation's `ca` from {remote} is not one PEM certificate; check the CA charm"
        ));
    }
    if !pki::is_ca(ca) {
        return Err(format!(
            "the certificates relation's `ca` from {remote} is not a CA certificate (no CA:TRUE); check the CA charm"
        ));
    }
    Ok(bundle(&cas))
}

/// Checks a CA's answer: the CA is one CA certificate, each certificate was signed by it,
/// comes with its own key, is valid at `now`, has the usages it serves for and (the
/// server's) names every one of this unit's `names`. Pure.
pub fn read_answer(
    remote: &str,
    prefix: &str,
    bag: &Bag,
    names: &[String],
    now: i64,
) -> Result<Option<Provided>, String> {
    let ca = check_ca(
        remote,
        bag.peer(Key::Ca).map(String::as_str).unwrap_or_default(),
    )?;
    if let Some(reason) = bag
        .get(&format!("{prefix}.refused"))
        .filter(|r| !r.is_empty())
    {
        return Err(format!(
            "{remote} refused this unit's certificate request: {reason}"
        ));
    }
    let pair =
        |cert_key: &str, key_key: &str| -> Result<Option<(String, String)>, String> {
            let (Some(cert), Some(key)) = (
                bag.get(cert_key).filter(|v| !v.is_empty()),
                bag.get(key_key).filter(|v| !v.is_empty()),
            ) else {
                return Ok(None);
            };
            let signed = pki::issued_by(cert, &ca).unwrap_or(false);
            let matches = pki::key_matches(cert, key).unwrap_or(false);
            if !signed || !matches {
                return Err(format!(
                "the certificates relation's `{cert_key}` from {remote} is {}; check the CA charm",
                if signed { "not the certificate of its key" } else { "not signed by its `ca`" }
            ));
            }
            Ok(Some((cert.clone(), key.clone())))
        };
    let usable = |cert_key: &str, p: Option<(String, String)>, names: &[String], server: bool| {
        if let Some((cert, _)) = &p {
            pki::check_leaf(cert, names, server, now).map_err(|why| {
                format!("the certificates relation's `{cert_key}` from {remote} {why}; check the CA charm")
            })?;
        }
        Ok::<_, String>(p)
    };
    let server_key = format!("{prefix}.server.cert");
    let server = pair(&server_key, &format!("{prefix}.server.key"))?;
    Ok(Some(Provided {
        server: usable(&server_key, server, names, true)?,
        client: usable(
            "client.cert",
            pair("client.cert", "client.key")?,
            &[],
            false,
        )?,
        ca,
        note: None,
    }))
}

/// The databag keys of one side of the TLS set-up: the client port's (server and client
/// certificates, from the built-in CA or the `certificates` relation) or the peer port's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Side {
    /// app keys: the bundle to trust, the CA that issues, where the move stands
    pub trust: Key,
    pub issuer: Key,
    pub step: Key,
    /// unit keys (`UnitTls`)
    pub trust_running: Key,
    pub issuer_in_use: Key,
    pub verified: Key,
    /// the certificate file whose issuer says where the unit stands, and the bundle file
    pub cert_file: &'static str,
    pub bundle_file: &'static str,
}

impl Side {
    pub const CLIENT: Side = Side {
        trust: Key::Trust,
        issuer: Key::IssuerCa,
        step: Key::CaMove,
        trust_running: Key::TrustRunning,
        issuer_in_use: Key::IssuerInUse,
        verified: Key::IssuerVerified,
        cert_file: "server.crt",
        bundle_file: "ca.crt",
    };
    pub const PEER: Side = Side {
        trust: Key::PeerTrust,
        issuer: Key::PeerIssuerCa,
        step: Key::PeerCaMove,
        trust_running: Key::PeerTrustRunning,
        issuer_in_use: Key::PeerIssuerInUse,
        verified: Key::PeerIssuerVerified,
        cert_file: "peer.crt",
        bundle_file: "peer-ca.crt",
    };

    /// How a CA move's step on this side is named in logs and statuses ("" or "peer port ").
    pub fn label(&self) -> &'static str {
        if *self == Side::PEER {
            "peer port "
        } else {
            ""
        }
    }

    /// What a unit's databag says of this side. Before the peer side existed, the peer port
    /// ran with the client side's bundle: that is what a unit that has not said otherwise runs.
    pub fn unit(&self, b: &Bag) -> UnitTls {
        let get = |k: Key| b.peer(k).filter(|v| !v.is_empty()).cloned();
        UnitTls {
            trust_running: get(self.trust_running)
                .or_else(|| get(Side::CLIENT.trust_running).filter(|_| *self == Side::PEER)),
            issuer_in_use: get(self.issuer_in_use),
            verified: get(self.verified),
        }
    }
}

/// What a started unit reports.
#[derive(Debug, Clone, Default)]
pub struct UnitTls {
    pub trust_running: Option<String>,
    pub issuer_in_use: Option<String>,
    /// the CA whose certificates its member served with when it last answered healthy
    pub verified: Option<String>,
}

impl UnitTls {
    /// Serves with `issuer_sha`'s certificates and answered healthy so.
    fn moved_to(&self, issuer_sha: &str) -> bool {
        self.issuer_in_use.as_deref() == Some(issuer_sha)
            && self.verified.as_deref() == Some(issuer_sha)
    }
}

/// The leader's decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub trust: String,
    pub issuer_ca: String,
    /// where the move stands, for the status; None when there is no move
    pub step: Option<String>,
}

/// The next step towards certificates from `target` (a CA PEM). `known` maps reported
/// digests back to CAs (every CA any unit may still use). Pure.
pub fn plan(
    target: &str,
    issuer_ca: &str,
    trust: &str,
    units: &[UnitTls],
    anything_started: bool,
) -> Plan {
    if !anything_started {
        // Nothing serves yet: start on the target directly.
        return Plan {
            trust: target.to_string(),
            issuer_ca: target.to_string(),
            step: None,
        };
    }
    let mut trusted = split(trust);
    let needed = needed_cas(&trusted, issuer_ca, target, units);
    if !needed.is_subset(&trusted) {
        trusted.extend(needed);
        return Plan {
            trust: bundle(&trusted),
            issuer_ca: issuer_ca.to_string(),
            step: Some("CA move 1/3: every member restarts trusting both CAs".into()),
        };
    }
    let trust = bundle(&trusted);
    let all_trust = units
        .iter()
        .all(|u| u.trust_running.as_deref() == Some(sha16(&trust).as_str()));
    if issuer_ca != target {
        if all_trust {
            return Plan {
                trust,
                issuer_ca: target.to_string(),
                step: Some("CA move 2/3: new certificates, one unit at a time".into()),
            };
        }
        return Plan {
            trust,
            issuer_ca: issuer_ca.to_string(),
            step: Some("CA move 1/3: every member restarts trusting both CAs".into()),
        };
    }
    let target_sha = sha16(target);
    let all_moved = units.iter().all(|u| u.moved_to(&target_sha));
    if trusted.len() > 1 {
        if all_moved {
            return Plan {
                trust: target.to_string(),
                issuer_ca: target.to_string(),
                step: Some("CA move 3/3: every member restarts trusting the new CA only".into()),
            };
        }
        return Plan {
            trust,
            issuer_ca: target.to_string(),
            step: Some("CA move 2/3: new certificates, one unit at a time".into()),
        };
    }
    let step = (!all_trust)
        .then(|| "CA move 3/3: every member restarts trusting the new CA only".to_string());
    Plan {
        trust,
        issuer_ca: target.to_string(),
        step,
    }
}

/// The CAs every member must trust now: the issuing and the target CA, and every trusted
/// one a unit still serves with.
fn needed_cas(
    trusted: &BTreeSet<String>,
    issuer_ca: &str,
    target: &str,
    units: &[UnitTls],
) -> BTreeSet<String> {
    let in_use = trusted
        .iter()
        .chain([issuer_ca.to_string(), target.to_string()].iter())
        .filter(|ca| {
            let s = sha16(ca);
            units
                .iter()
                .any(|u| u.issuer_in_use.as_deref() == Some(s.as_str()))
        })
        .cloned()
        .collect::<Vec<_>>();
    in_use
        .into_iter()
        .chain([issuer_ca.to_string(), target.to_string()])
        .collect()
}

/// A unit takes certificates from a new CA when every started unit before it (in unit
/// order) serves with them and answered healthy so: one healthy unit at a time.
pub fn my_turn(unit: &str, issuer_sha: &str, started: &[(String, UnitTls)]) -> bool {
    let n = |u: &str| {
        u.rsplit('/')
            .next()
            .and_then(|x| x.parse::<u64>().ok())
            .unwrap_or(0)
    };
    started
        .iter()
        .filter(|(u, _)| n(u) < n(unit))
        .all(|(_, s)| s.moved_to(issuer_sha))
}

/// The digest of the CA (among `cas`) that signed `cert`, if any.
pub fn issuer_of(cert: &str, cas: &BTreeSet<String>) -> Option<String> {
    cas.iter()
        .find(|ca| pki::issued_by(cert, ca).unwrap_or(false))
        .map(|ca| sha16(ca))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca(n: &str) -> String {
        pki::Ca::create(n).unwrap().cert_pem
    }

    fn unit(trust: &str, issuer: &str) -> UnitTls {
        UnitTls {
            trust_running: Some(sha16(trust)),
            issuer_in_use: Some(sha16(issuer)),
            verified: Some(sha16(issuer)),
        }
    }

    #[test]
    fn a_move_trusts_both_then_switches_then_drops_the_old_ca() {
        let (a, b) = (ca("a"), ca("b"));
        let both = bundle(&[a.clone(), b.clone()].into_iter().collect());
        // all on A: the bundle grows first
        let p = plan(&b, &a, &a, &[unit(&a, &a), unit(&a, &a)], true);
        assert_eq!(
            (p.trust.as_str(), p.issuer_ca.as_str()),
            (both.as_str(), a.as_str())
        );
        // not every member restarted with both: the issuer stays
        let p = plan(&b, &a, &both, &[unit(&both, &a), unit(&a, &a)], true);
        assert_eq!(p.issuer_ca, a);
        // every member trusts both: B issues
        let p = plan(&b, &a, &both, &[unit(&both, &a), unit(&both, &a)], true);
        assert_eq!(
            (p.trust.as_str(), p.issuer_ca.as_str()),
            (both.as_str(), b.as_str())
        );
        // one unit still on A: both stay trusted
        let p = plan(&b, &b, &both, &[unit(&both, &b), unit(&both, &a)], true);
        assert_eq!(p.trust, both);
        // all on B: A is dropped
        let p = plan(&b, &b, &both, &[unit(&both, &b), unit(&both, &b)], true);
        assert_eq!(p.trust, b);
        // and when every member restarted with B only, nothing is left to do
        let p = plan(&b, &b, &b, &[unit(&b, &b), unit(&b, &b)], true);
        assert_eq!((p.trust.as_str(), p.step), (b.as_str(), None));
    }

    #[test]
    fn a_move_reversed_half_way_keeps_every_ca_in_use_trusted() {
        let (a, b) = (ca("a"), ca("b"));
        let both = bundle(&[a.clone(), b.clone()].into_iter().collect());
        // B issues, one unit moved, then the relation goes: the target is A again
        let p = plan(&a, &b, &both, &[unit(&both, &b), unit(&both, &a)], true);
        assert_eq!(
            (p.trust.as_str(), p.issuer_ca.as_str()),
            (both.as_str(), a.as_str())
        );
        // a third CA while units use A and B: all three are trusted before anything else
        let c = ca("c");
        let p = plan(&c, &b, &both, &[unit(&both, &b), unit(&both, &a)], true);
        assert_eq!(split(&p.trust).len(), 3);
        assert_eq!(p.issuer_ca, b);
    }

    #[test]
    fn before_anything_runs_the_target_is_used_directly() {
        let (a, b) = (ca("a"), ca("b"));
        let p = plan(&b, &a, &a, &[], false);
        assert_eq!(
            (p.trust.as_str(), p.issuer_ca.as_str()),
            (b.as_str(), b.as_str())
        );
    }

    #[test]
    fn units_take_new_certificates_in_unit_order() {
        let s = Some("x".to_string());
        let moved = UnitTls {
            trust_running: None,
            issuer_in_use: s.clone(),
            verified: s.clone(),
        };
        let started = vec![
            ("etcd/0".to_string(), moved.clone()),
            ("etcd/10".to_string(), UnitTls::default()),
            ("etcd/2".to_string(), UnitTls::default()),
        ];
        assert!(my_turn("etcd/2", "x", &started));
        assert!(!my_turn("etcd/10", "x", &started));
        assert!(my_turn("etcd/0", "x", &started));
    }

    /// M2: a unit whose member has not answered healthy with the new certificates holds
    /// the next one back, and keeps the old CA trusted.
    #[test]
    fn a_ca_move_waits_for_the_unit_before_to_answer_healthy() {
        let moved_unhealthy = UnitTls {
            trust_running: None,
            issuer_in_use: Some("x".into()),
            verified: Some("old".into()),
        };
        let started = vec![("etcd/0".to_string(), moved_unhealthy.clone())];
        assert!(!my_turn("etcd/1", "x", &started));
        let (a, b) = (ca("a"), ca("b"));
        let both = bundle(&[a.clone(), b.clone()].into_iter().collect());
        let mut u = unit(&both, &b);
        u.verified = Some(sha16(&a));
        let p = plan(&b, &b, &both, &[unit(&both, &b), u], true);
        assert_eq!(
            p.trust, both,
            "the old CA stays trusted until every unit answered healthy"
        );
    }

    #[test]
    fn a_unit_from_before_the_peer_side_runs_the_client_bundle_on_the_peer_port() {
        let b = Bag::from([("trust-running".to_string(), "t".to_string())]);
        assert_eq!(Side::PEER.unit(&b).trust_running.as_deref(), Some("t"));
        assert_eq!(Side::PEER.unit(&b).issuer_in_use, None);
        let b = Bag::from([
            ("trust-running".to_string(), "t".to_string()),
            ("peer-trust-running".to_string(), "p".to_string()),
        ]);
        assert_eq!(Side::PEER.unit(&b).trust_running.as_deref(), Some("p"));
        assert_eq!(Side::CLIENT.unit(&b).trust_running.as_deref(), Some("t"));
    }

    #[test]
    fn an_answer_signed_by_another_ca_or_refused_is_named() {
        let (a, b) = (pki::Ca::create("a").unwrap(), pki::Ca::create("b").unwrap());
        let names = vec!["10.0.0.5".to_string()];
        let now = crate::unit::now() as i64;
        let (cert, key) = b
            .issue(
                pki::Profile::Server,
                "10.0.0.5",
                &names,
                &names,
                time::Duration::days(1),
            )
            .unwrap();
        let mut bag = Bag::from([
            ("ca".into(), a.cert_pem.clone()),
            ("etcd_0.server.cert".into(), cert.clone()),
            ("etcd_0.server.key".into(), key.clone()),
        ]);
        let e = read_answer("easyrsa/0", "etcd_0", &bag, &names, now).unwrap_err();
        assert!(
            e.contains("etcd_0.server.cert") && e.contains("not signed"),
            "{e}"
        );
        bag.insert("ca".into(), b.cert_pem.clone());
        let got = read_answer("easyrsa/0", "etcd_0", &bag, &names, now)
            .unwrap()
            .unwrap();
        assert_eq!(got.server, Some((cert.clone(), key)));
        bag.insert("etcd_0.refused".into(), "10.9.9.9 is not an address".into());
        assert!(read_answer("easyrsa/0", "etcd_0", &bag, &names, now)
            .unwrap_err()
            .contains("refused"));
        bag.remove("etcd_0.refused");
        // M2: a certificate that does not name the unit, has expired or lacks serverAuth.
        let other = vec!["10.0.0.6".to_string()];
        let e = read_answer("easyrsa/0", "etcd_0", &bag, &other, now).unwrap_err();
        assert!(e.contains("does not name 10.0.0.6"), "{e}");
        let e = read_answer("easyrsa/0", "etcd_0", &bag, &names, now + 2 * 86400).unwrap_err();
        assert!(e.contains("has expired"), "{e}");
        let (client_only, ckey) = b
            .issue(
                pki::Profile::Client,
                "10.0.0.5",
                &names,
                &names,
                time::Duration::days(1),
            )
            .unwrap();
        bag.insert("etcd_0.server.cert".into(), client_only);
        bag.insert("etcd_0.server.key".into(), ckey);
        let e = read_answer("easyrsa/0", "etcd_0", &bag, &names, now).unwrap_err();
        assert!(e.contains("serverAuth"), "{e}");
        // A leaf where the CA should be.
        bag.insert("ca".into(), cert.clone());
        let e = read_answer("easyrsa/0", "etcd_0", &bag, &names, now).unwrap_err();
        assert!(e.contains("not a CA certificate"), "{e}");
        bag.insert("ca".into(), "garbage".into());
        assert!(read_answer("easyrsa/0", "etcd_0", &bag, &names, now)
            .unwrap_err()
            .contains("`ca`"));
    }
}
