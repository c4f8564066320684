//! tls-certificates v4 on the `certificates` endpoint (charm-relation-interfaces
//! `tls_certificates/v1`, the protocol of vault, self-signed-certificates, lego and
//! manual-tls-certificates), beside the legacy protocol easyrsa speaks (`authority`).
//!
//! The charm writes both requests on every unit and reads whichever answer comes: a provider's
//! application databag holding `certificates` (or `request_errors`, `capabilities`) speaks v4.
//! Each unit asks in its unit databag for a server certificate (serverAuth and clientAuth, its
//! addresses and `certificate_extra_sans`) signed over the key it keeps for its own CSRs; the
//! leader asks in the application databag for the one client certificate the `db`, `proxy` and
//! `prometheus` clients share, over a key kept in an application secret. No private key is
//! written to the relation.
//!
//! A certificate the provider marks `revoked` is not installed; the unit keeps serving with what
//! it has until the provider issues anew for the same request (self-signed-certificates revokes
//! everything when its CA changes, then answers the same requests from the new CA), and the
//! leader keeps the CA where it is meanwhile. A new CA then moves in by the three steps of
//! `authority`, with no member down.

use super::authority::{self, Provided};
use super::certs::{kept_csr, renewal_due};
use crate::juju::{self, Bag};
use crate::pki::{self, Profile};
use crate::unit::peers::{Key, Peers};
use crate::unit::LocalState;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// This unit's server CSR to the provider.
const SERVER_CSR: &str = "/var/lib/etcd-charm/provider-server.csr";
/// The application secret with the shared client certificate's key.
const CLIENT_KEY_LABEL: &str = "etcd-provider-client";
/// The databag key of both sides' requests, and the provider's answers.
const REQUESTS: &str = "certificate_signing_requests";
const CERTIFICATES: &str = "certificates";
const ERRORS: &str = "request_errors";

/// One certificate in the provider's `certificates` list.
#[derive(Debug, Clone, Deserialize)]
struct Issued {
    ca: String,
    certificate_signing_request: String,
    certificate: String,
    #[serde(default)]
    revoked: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct RequestError {
    csr: String,
    error: ErrorBody,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    name: String,
    #[serde(default)]
    message: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    certificate_signing_request: String,
    ca: bool,
}

/// Whether a provider's application databag speaks v4.
pub fn speaks_v4(app: &Bag) -> bool {
    [CERTIFICATES, ERRORS, "capabilities"]
        .iter()
        .any(|k| app.contains_key(*k))
}

/// A short id of a PEM block (certificate or request): its DER's digest, so two PEM texts of
/// one request (the provider re-encodes them) are one id. None when it is not PEM.
pub fn pem_id(pem: &str) -> Option<String> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.trim().as_bytes()).ok()?;
    Some(pki::sha256_hex(&p.contents)[..16].to_string())
}

/// The JSON list of one request, as the unit and application databags carry it.
fn requests_value(csr: &str) -> anyhow::Result<String> {
    Ok(serde_json::to_string(&[Request {
        certificate_signing_request: csr.trim().to_string(),
        ca: false,
    }])?)
}

/// This unit's server CSR for the provider, over the key of its CSRs to the built-in CA: kept
/// in a file; a new one when the names change, or once per certificate on disk that is due
/// for renewal.
pub fn server_csr(st: &mut LocalState, unit: &str, names: &[String]) -> anyhow::Result<String> {
    let names_changed = st.provider_csr_names != names;
    let asked = "the certificates provider";
    let c = kept_csr(
        st,
        Path::new(SERVER_CSR),
        "server.crt",
        "provider-server",
        names_changed,
        asked,
        || {
            let key = pki::unit_key(Profile::Server)?;
            let name = crate::unit::member_name(unit);
            Ok(pki::csr_with_usages(&key, &name, names, Profile::Server)?)
        },
    )?;
    st.provider_csr_names = names.to_vec();
    Ok(c)
}

/// Writes this unit's v4 request into its databag.
pub fn request(rel: &str, have: &Bag, csr: &str) -> anyhow::Result<()> {
    // The provider re-reads the list only when its text changes: equal requests are not
    // written again.
    if same_requests(have.get(REQUESTS), csr) {
        return Ok(());
    }
    let want = Bag::from([(REQUESTS.to_string(), requests_value(csr)?)]);
    Ok(juju::relation_update(rel, have, want)?)
}

/// The requests in a databag value, when it is a list of them.
fn requests_in(value: Option<&String>) -> Option<Vec<Request>> {
    value.and_then(|v| serde_json::from_str(v).ok())
}

fn same_requests(have: Option<&String>, csr: &str) -> bool {
    requests_in(have)
        .is_some_and(|r| r.len() == 1 && pem_id(&r[0].certificate_signing_request) == pem_id(csr))
}

/// The leader's request for the shared client certificate, in the application databag: over
/// the key in the application secret (made once), renewed once its certificate on the
/// provider's side is due. Publishes the request's id for the units (`Key::ProviderClientCsr`).
pub fn leader_request(
    st: &mut LocalState,
    peers: &mut Peers,
    rel: &str,
    app: &str,
) -> anyhow::Result<()> {
    let have = juju::relation_get(rel, app, true)?;
    let kept = requests_in(have.get(REQUESTS))
        .and_then(|r| r.into_iter().next())
        .map(|r| r.certificate_signing_request);
    let (due, issued_sha) = renewal_due(st, "client.crt", "provider-client")?;
    let csr = match kept {
        Some(c) if !due && pem_id(&c).as_deref() == peers.app_get(Key::ProviderClientCsr) => c,
        _ => {
            let key = client_key()?;
            let key = rcgen::KeyPair::from_pem(&key)?;
            if due {
                juju::log("INFO", "the shared client certificate is due for renewal; asking the certificates provider for a new one");
                st.renewed_for
                    .insert("provider-client".into(), issued_sha.unwrap_or_default());
            }
            pki::csr_with_usages(&key, "etcd-client", &[], Profile::Client)?
        }
    };
    juju::relation_update_app(
        rel,
        &have,
        Bag::from([(REQUESTS.to_string(), requests_value(&csr)?)]),
    )?;
    peers.app_set(Key::ProviderClientCsr, &pem_id(&csr).unwrap_or_default());
    Ok(())
}

/// The shared client certificate's key (PEM), made by the leader the first time.
fn client_key() -> anyhow::Result<String> {
    if let Some(k) =
        juju::secret_get_by_label(CLIENT_KEY_LABEL)?.and_then(|c| c.get("client-key").cloned())
    {
        return Ok(k);
    }
    let k = rcgen::KeyPair::generate()?.serialize_pem();
    juju::secret_add(
        CLIENT_KEY_LABEL,
        &Bag::from([("client-key".to_string(), k.clone())]),
    )?;
    Ok(k)
}

/// What the provider answered this unit, checked (`read`), before the private keys are added.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub ca: String,
    pub server: Option<String>,
    pub client: Option<String>,
    /// why the unit waits (a revoked certificate), for its status
    pub note: Option<String>,
}

/// Reads the provider's answer for this unit's server request (`server_id`) and the shared
/// client request (`client_id`): Ok(None) before the provider issued anything; an answer
/// with `server` None while this unit's request is outstanding or its certificate revoked
/// (`ca` then the CA the provider issues from, so nothing moves meanwhile); Err naming the
/// provider and the field it cannot use. Pure.
pub fn read(
    remote: &str,
    app: &Bag,
    server_id: &str,
    client_id: Option<&str>,
    names: &[String],
    now: i64,
) -> Result<Option<Answer>, String> {
    let field = |k: &str| format!("the certificates relation's `{k}` from {remote}");
    let issued: Vec<Issued> = match app.get(CERTIFICATES).filter(|v| !v.trim().is_empty()) {
        Some(v) => serde_json::from_str(v).map_err(|e| {
            format!(
                "{} is not a list of certificates ({}); check the CA charm",
                field(CERTIFICATES),
                short(&e)
            )
        })?,
        None => vec![],
    };
    if let Some(v) = app.get(ERRORS).filter(|v| !v.trim().is_empty()) {
        let errors: Vec<RequestError> = serde_json::from_str(v).map_err(|e| {
            format!(
                "{} is not a list of request errors ({}); check the CA charm",
                field(ERRORS),
                short(&e)
            )
        })?;
        if let Some(e) = errors
            .iter()
            .find(|e| pem_id(&e.csr).as_deref() == Some(server_id))
        {
            return Err(format!(
                "{remote} refused this unit's certificate request: {}; check its configuration and the names asked for (certificate_extra_sans)",
                bounded(&format!("{}: {}", e.error.name, e.error.message))
            ));
        }
    }
    let find = |id: &str| {
        issued
            .iter()
            .find(|c| pem_id(&c.certificate_signing_request).as_deref() == Some(id))
    };
    let mine = find(server_id);
    let Some(ca_pem) = mine
        .or_else(|| issued.iter().find(|c| c.revoked != Some(true)))
        .or(issued.first())
        .map(|c| c.ca.clone())
    else {
        return Ok(None);
    };
    let ca = authority::check_ca(remote, &ca_pem)?;
    let mut answer = Answer {
        ca: ca.clone(),
        server: None,
        client: None,
        note: None,
    };
    match mine {
        Some(c) if c.revoked == Some(true) => {
            answer.note = Some(format!(
                "{remote} revoked this unit's certificate; serving with it until {remote} issues a new one"
            ));
        }
        Some(c) => answer.server = Some(usable(&field(CERTIFICATES), c, &ca, names, true, now)?),
        None => {}
    }
    if let Some(c) = client_id.and_then(find).filter(|c| c.revoked != Some(true)) {
        answer.client = Some(usable(&field(CERTIFICATES), c, &ca, &[], false, now)?);
    }
    Ok(Some(answer))
}

/// A certificate the provider issued, checked: signed by its `ca` (the one the answer serves
/// under), usable for its role, valid now.
fn usable(
    field: &str,
    c: &Issued,
    ca: &str,
    names: &[String],
    server: bool,
    now: i64,
) -> Result<String, String> {
    let cert = c.certificate.trim().to_string() + "\n";
    if !pki::issued_by(&cert, ca).unwrap_or(false) {
        return Err(format!(
            "{field}: a certificate is not signed by its `ca`; check the CA charm"
        ));
    }
    pki::check_leaf(&cert, names, server, now).map_err(|why| {
        format!(
            "{field}: the {} certificate {why}; check the CA charm",
            if server { "server" } else { "client" }
        )
    })?;
    Ok(cert)
}

/// A JSON error (it may quote the provider's text) cut to 100 characters.
fn short(e: &serde_json::Error) -> String {
    bounded(&e.to_string()).chars().take(100).collect()
}

/// A provider's text in a status: one line, at most 200 characters.
fn bounded(s: &str) -> String {
    let one: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    one.chars().take(200).collect()
}

/// The v4 answer for this unit (its requests are written by `exchange::exchange`), with this
/// unit's keys added. The shared client key is read from its secret only when the
/// certificate is not the one on disk already.
pub fn exchange(
    remote_app: &str,
    app_bag: &Bag,
    csr: &str,
    names: &[String],
    peers: &Peers,
) -> anyhow::Result<Result<Option<Provided>, String>> {
    let Some(server_id) = pem_id(csr) else {
        anyhow::bail!("the server CSR in {SERVER_CSR} cannot be read");
    };
    let client_id = peers
        .app_get(Key::ProviderClientCsr)
        .filter(|s| !s.is_empty());
    let now = crate::unit::now() as i64;
    let answer = match read(remote_app, app_bag, &server_id, client_id, names, now) {
        Ok(Some(a)) => a,
        Ok(None) => return Ok(Ok(None)),
        Err(msg) => return Ok(Err(msg)),
    };
    let server_key = pki::unit_key(Profile::Server)?.serialize_pem();
    let server = match answer.server {
        Some(cert) if pki::key_matches(&cert, &server_key).unwrap_or(false) => Some((cert, server_key)),
        Some(_) => {
            return Ok(Err(format!(
                "the certificate {remote_app} issued for this unit's request is not for this unit's key; check the CA charm"
            )))
        }
        None => None,
    };
    let client = match answer.client {
        Some(cert) => {
            let on_disk = std::fs::read_to_string(pki::path("client.crt")).ok();
            let key = if on_disk.as_deref() == Some(cert.as_str()) {
                Some(std::fs::read_to_string(pki::path("client.key"))?)
            } else {
                // None: the leader's secret is not there yet, and the files on disk serve.
                juju::secret_get_by_label(CLIENT_KEY_LABEL)?
                    .and_then(|c| c.get("client-key").cloned())
            };
            match key {
                Some(key) if !pki::key_matches(&cert, &key).unwrap_or(false) => {
                    return Ok(Err(format!(
                        "the client certificate {remote_app} issued is not for the application's client key; check the CA charm"
                    )))
                }
                key => key.map(|k| (cert, k)),
            }
        }
        None => None,
    };
    Ok(Ok(Some(Provided {
        ca: answer.ca,
        server,
        client,
        note: answer.note,
    })))
}

#[cfg(test)]
#[path = "provider_tests.rs"]
mod tests;
