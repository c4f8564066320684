//! easyrsa, the charm: one CA per application, made by the leader and kept in an application
//! secret, answering the legacy `tls-certificates` interface on `client` (anchor-charms §2–3).
//!
//! Every hook is the same pass: the leader makes sure the CA exists, then for every unit of
//! every requirer it checks the request and issues (or keeps) what was asked for. Replies go
//! in the leader's unit databag; non-leaders publish nothing (a requirer reads whichever
//! unit answers). Keys are made here, as easyrsa does (the legacy interface has no CSR).

use anyhow::{Context as _, Result};
use charmkit::juju::{self, Bag};
use charmkit::pki::{self, Ca, Profile};
use charmkit::secrets;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

const ENDPOINT: &str = "client";
const CA_LABEL: &str = "easyrsa-ca";
/// Where operators find the CA and the global client credentials, as easyrsa's `pki/`.
const PKI_DIR: &str = "/var/lib/easyrsa/pki";
/// easyrsa 3.0.6 and later: 825 days for leaf certificates.
const LEAF_DAYS: i64 = 825;

fn main() {
    let dispatch = std::env::var("JUJU_DISPATCH_PATH").unwrap_or_default();
    if let Err(e) = hook(&dispatch) {
        juju::log("ERROR", &format!("{dispatch}: {e:#}"));
        eprintln!("{dispatch}: {e:#}");
        std::process::exit(1);
    }
}

fn hook(dispatch: &str) -> Result<()> {
    if dispatch.starts_with("actions/") {
        juju::action_fail("easyrsa has no actions")?;
        return Ok(());
    }
    if !juju::is_leader()? {
        juju::status_set(
            "active",
            "Standing by: the leader unit issues certificates",
            false,
        )?;
        return Ok(());
    }
    let Some(ca) = leader_ca()? else {
        juju::status_set("blocked", "Public address not available yet", false)?;
        return Ok(());
    };
    let unit = std::env::var("JUJU_UNIT_NAME").context("JUJU_UNIT_NAME is not set")?;
    let mut refused = vec![];
    let mut served = 0;
    for rel in juju::relation_ids(ENDPOINT)? {
        let mine = juju::relation_get(&rel, &unit, false)?;
        let mut want = Bag::new();
        want.insert("ca".into(), ca.ca.cert_pem.clone());
        want.insert("client.cert".into(), ca.client_cert.clone());
        want.insert("client.key".into(), ca.client_key.clone());
        for remote in juju::relation_list(&rel)? {
            let bag = juju::relation_get(&rel, &remote, false)?;
            match answer(&ca.ca, &remote, &bag, &mine) {
                Ok(Some((prefix, reply))) => {
                    served += 1;
                    want.insert(format!("{prefix}.refused"), String::new());
                    want.extend(reply);
                }
                Ok(None) => {}
                Err(reason) => {
                    juju::log("WARNING", &format!("refused {remote}'s request: {reason}"));
                    let prefix = remote.replace('/', "_");
                    want.insert(format!("{prefix}.refused"), reason.clone());
                    refused.push(format!("{remote}: {reason}"));
                }
            }
        }
        // Only what changed: an empty value deletes a key that is there.
        juju::relation_update(&rel, &mine, want)?;
    }
    let mut msg = if served > 0 {
        format!("Certificate Authority connected ({served} units served)")
    } else {
        "Certificate Authority ready".to_string()
    };
    if !refused.is_empty() {
        msg.push_str(&format!("; refused {}", refused.join("; ")));
    }
    juju::status_set("active", &msg, false)?;
    Ok(())
}

/// The CA and the global client certificate every consumer shares.
struct Authority {
    ca: Ca,
    client_cert: String,
    client_key: String,
}

/// The CA from the application secret, made once: CN = this unit's address on `client`.
fn leader_ca() -> Result<Option<Authority>> {
    let from = |b: &Bag| -> Option<Authority> {
        Some(Authority {
            ca: Ca {
                cert_pem: b.get("ca-cert")?.clone(),
                key_pem: b.get("ca-key")?.clone(),
            },
            client_cert: b.get("client-cert")?.clone(),
            client_key: b.get("client-key")?.clone(),
        })
    };
    let authority = match secrets::secret_get_by_label(CA_LABEL)? {
        Some(b) => from(&b).with_context(|| {
            format!("the CA secret {CA_LABEL:?} lacks ca-cert, ca-key, client-cert or client-key; restore it from a backup")
        })?,
        None => {
            let Some(address) = juju::network_ingress(ENDPOINT)?.into_iter().next() else {
                return Ok(None);
            };
            let ca = Ca::create(&address)?;
            let (client_cert, client_key) = ca.issue_with_key(Profile::Client, "client")?;
            secrets::secret_add(
                CA_LABEL,
                &Bag::from([
                    ("ca-cert".into(), ca.cert_pem.clone()),
                    ("ca-key".into(), ca.key_pem.clone()),
                    ("client-cert".into(), client_cert.clone()),
                    ("client-key".into(), client_key.clone()),
                ]),
            )?;
            juju::log("INFO", &format!("created the CA (CN {address})"));
            Authority {
                ca,
                client_cert,
                client_key,
            }
        }
    };
    let dir = Path::new(PKI_DIR);
    for (file, body, mode) in [
        ("ca.crt", &authority.ca.cert_pem, 0o644),
        ("client.crt", &authority.client_cert, 0o644),
        ("client.key", &authority.client_key, 0o600),
    ] {
        pki::update_file(&dir.join(file), body, mode)?;
    }
    Ok(Some(authority))
}

/// What one requirer unit asked for, checked, and the reply keys for it; `None` when it has
/// not asked yet. A refusal names the key and the fault.
fn answer(
    ca: &Ca,
    remote: &str,
    bag: &Bag,
    mine: &Bag,
) -> std::result::Result<Option<(String, Bag)>, String> {
    let Some(unit_name) = bag.get("unit_name").filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let prefix = remote.replace('/', "_");
    if *unit_name != prefix {
        return Err(format!(
            "unit_name {unit_name:?} is not this unit's name ({prefix:?}): a unit asks only in its own name"
        ));
    }
    // The requester's own addresses, as Juju wrote them into its databag.
    let allowed: Vec<String> = ["ingress-address", "private-address"]
        .iter()
        .filter_map(|k| bag.get(*k).filter(|v| !v.is_empty()).cloned())
        .collect();
    for key in ["application_cert_requests", "intermediate_cert_requests"] {
        if requests(bag, key)?.is_some_and(|r| !r.is_empty()) {
            return Err(format!("{key} is not supported by this CA"));
        }
    }
    let mut reply = Bag::new();
    if let Some(cn) = bag.get("common_name").filter(|v| !v.is_empty()) {
        let sans = sans_of(bag.get("sans").map(String::as_str), "sans")?;
        let (cert, key) = issue_or_keep(
            ca,
            Profile::Server,
            cn,
            &sans,
            &allowed,
            mine.get(&format!("{prefix}.server.cert")),
            mine.get(&format!("{prefix}.server.key")),
        )?;
        reply.insert(format!("{prefix}.server.cert"), cert);
        reply.insert(format!("{prefix}.server.key"), key);
    }
    for (key, profile, out) in [
        ("cert_requests", Profile::Server, "processed_requests"),
        (
            "client_cert_requests",
            Profile::Client,
            "processed_client_requests",
        ),
    ] {
        let Some(reqs) = requests(bag, key)? else {
            continue;
        };
        let before: BTreeMap<String, BTreeMap<String, String>> = mine
            .get(&format!("{prefix}.{out}"))
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_default();
        let mut done = BTreeMap::new();
        for (cn, sans) in reqs {
            let had = before.get(&cn);
            let names = if profile == Profile::Client {
                vec![]
            } else {
                sans
            };
            let (cert, k) = issue_or_keep(
                ca,
                profile,
                &cn,
                &names,
                &allowed,
                had.and_then(|h| h.get("cert")),
                had.and_then(|h| h.get("key")),
            )
            .map_err(|e| format!("{key}[{cn}]: {e}"))?;
            done.insert(cn, BTreeMap::from([("cert", cert), ("key", k)]));
        }
        let v = serde_json::to_string(&done).map_err(|e| e.to_string())?;
        reply.insert(format!("{prefix}.{out}"), v);
    }
    Ok(Some((prefix, reply)))
}

/// A `{CN: {"sans": [...]}}` map from a request key (absent → None).
fn requests(
    bag: &Bag,
    key: &str,
) -> std::result::Result<Option<BTreeMap<String, Vec<String>>>, String> {
    let Some(raw) = bag.get(key).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let v: BTreeMap<String, Value> = serde_json::from_str(raw).map_err(|e| {
        format!("{key} is not a JSON map of common names to {{\"sans\": [...]}}: {e}")
    })?;
    let mut out = BTreeMap::new();
    for (cn, entry) in v {
        let sans = match entry.get("sans") {
            None | Some(Value::Null) => vec![],
            Some(s) => sans_of(Some(&s.to_string()), &format!("{key}[{cn}].sans"))?,
        };
        out.insert(cn, sans);
    }
    Ok(Some(out))
}

/// A JSON list of names; each an IP address or a DNS name without wildcards.
fn sans_of(raw: Option<&str>, key: &str) -> std::result::Result<Vec<String>, String> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(vec![]);
    };
    let names: Vec<String> =
        serde_json::from_str(raw).map_err(|e| format!("{key} is not a JSON list of names: {e}"))?;
    for n in &names {
        let dns_ok = !n.is_empty()
            && n.len() <= 253
            && n.split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if n.parse::<std::net::IpAddr>().is_err() && !dns_ok {
            return Err(format!(
                "{key}: {n:?} is neither an IP address nor a DNS name (wildcards are not issued)"
            ));
        }
    }
    Ok(names)
}

/// The certificate issued before when it still answers the request (this CA's, the same
/// names, its key with it, not due for renewal); a new key and certificate otherwise.
fn issue_or_keep(
    ca: &Ca,
    profile: Profile,
    cn: &str,
    names: &[String],
    allowed: &[String],
    cert: Option<&String>,
    key: Option<&String>,
) -> std::result::Result<(String, String), String> {
    // IP addresses must be the unit's own; the CN is a name of the certificate too.
    let mut checked: Vec<String> = names.to_vec();
    if cn.parse::<std::net::IpAddr>().is_ok() && !checked.iter().any(|n| n == cn) {
        checked.push(cn.to_string());
    }
    let ips: Vec<String> = checked
        .iter()
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .cloned()
        .collect();
    pki::check_names(&ips, allowed).map_err(|e| e.to_string())?;
    if let (Some(c), Some(k)) = (cert, key) {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut have = pki::cert_names(c).unwrap_or_default();
        let mut want = if profile == Profile::Client {
            vec![]
        } else {
            names.to_vec()
        };
        have.sort();
        want.sort();
        want.dedup();
        let keep = pki::issued_by(c, &ca.cert_pem).unwrap_or(false)
            && pki::key_matches(c, k).unwrap_or(false)
            && pki::common_name(c).ok().as_deref() == Some(cn)
            && have == want
            && !pki::needs_renewal(c, now);
        if keep {
            return Ok((c.clone(), k.clone()));
        }
    }
    // DNS names cannot be checked against anything Juju says; they are issued as asked.
    let mut grant: Vec<String> = allowed.to_vec();
    grant.extend(
        checked
            .iter()
            .filter(|n| n.parse::<std::net::IpAddr>().is_err())
            .cloned(),
    );
    ca.issue(profile, cn, names, &grant, time::Duration::days(LEAF_DAYS))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(sans: &str) -> Bag {
        Bag::from([
            ("unit_name".into(), "probe_0".into()),
            ("ingress-address".into(), "10.1.0.5".into()),
            ("common_name".into(), "10.1.0.5".into()),
            ("sans".into(), sans.into()),
        ])
    }

    #[test]
    fn a_request_for_the_units_own_names_is_answered_and_kept() {
        let ca = Ca::create("10.1.0.2").unwrap();
        let bag = request(r#"["10.1.0.5","127.0.0.1","probe-0"]"#);
        let (prefix, reply) = answer(&ca, "probe/0", &bag, &Bag::new()).unwrap().unwrap();
        assert_eq!(prefix, "probe_0");
        let cert = &reply["probe_0.server.cert"];
        assert!(pki::issued_by(cert, &ca.cert_pem).unwrap());
        assert!(pki::key_matches(cert, &reply["probe_0.server.key"]).unwrap());
        // asked again with the same names: the same certificate
        let (_, again) = answer(&ca, "probe/0", &bag, &reply).unwrap().unwrap();
        assert_eq!(&again["probe_0.server.cert"], cert);
        // new names: a new certificate
        let bag = request(r#"["10.1.0.5"]"#);
        let (_, other) = answer(&ca, "probe/0", &bag, &reply).unwrap().unwrap();
        assert_ne!(&other["probe_0.server.cert"], cert);
    }

    #[test]
    fn names_the_unit_does_not_own_and_malformed_values_are_refused() {
        let ca = Ca::create("10.1.0.2").unwrap();
        let e = answer(&ca, "probe/0", &request(r#"["10.9.9.9"]"#), &Bag::new()).unwrap_err();
        assert!(e.contains("10.9.9.9 is not an address"), "{e}");
        let e = answer(&ca, "probe/0", &request("not json"), &Bag::new()).unwrap_err();
        assert!(e.contains("sans is not a JSON list"), "{e}");
        let e = answer(
            &ca,
            "probe/0",
            &request(r#"["*.example.com"]"#),
            &Bag::new(),
        )
        .unwrap_err();
        assert!(e.contains("wildcards"), "{e}");
        let mut b = request("[]");
        b.insert("unit_name".into(), "etcd_0".into());
        let e = answer(&ca, "probe/0", &b, &Bag::new()).unwrap_err();
        assert!(e.contains("its own name"), "{e}");
        let mut b = request("[]");
        b.insert("cert_requests".into(), "[1,2]".into());
        let e = answer(&ca, "probe/0", &b, &Bag::new()).unwrap_err();
        assert!(e.contains("cert_requests is not a JSON map"), "{e}");
    }

    #[test]
    fn client_requests_get_client_certificates() {
        let ca = Ca::create("10.1.0.2").unwrap();
        let mut b = request("[]");
        b.insert(
            "client_cert_requests".into(),
            r#"{"admin": {"sans": []}}"#.into(),
        );
        let (_, reply) = answer(&ca, "probe/0", &b, &Bag::new()).unwrap().unwrap();
        let done: BTreeMap<String, BTreeMap<String, String>> =
            serde_json::from_str(&reply["probe_0.processed_client_requests"]).unwrap();
        assert_eq!(pki::common_name(&done["admin"]["cert"]).unwrap(), "admin");
    }
}
