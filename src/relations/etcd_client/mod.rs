//! `etcd-client` (interface etcd_client/v0, charm-relation-interfaces): clients of today, each
//! with an etcd user of its own limited to its key prefix.
//!
//! The requirer's application databag holds `prefix`, `secret-mtls` (a secret with its
//! certificate, `mtls-cert`), `requested-secrets` and `provided-secrets`; the leader answers
//! in this application's databag with `endpoints`, `version`, `secret-user` (a secret with
//! `username`) and `secret-tls` (a secret with `tls-ca`), both granted to the relation.
//!
//! etcd takes a request's user from its client certificate's Common Name once authentication
//! is on, so the client's user is named by its certificate's CN and given one role:
//! read-write on `[prefix, prefix+1)` (or the whole key space, for an application named in
//! `etcd_client_full_access`). The user and role go when the relation goes.
//!
//! No member restarts for a client: etcd reads its trusted CAs only when it starts, so the
//! client's certificate must be issued by a CA every member trusts already (relate the client
//! to the same `certificates` provider as etcd); the spec's way, adding each client's own
//! certificate to the trusted CAs and restarting every member, is refused. It would also make
//! the client's key a CA that can sign a certificate with any Common Name, `root` included.
//!
//! Authentication is turned on with the first client served, and stays on: root's password
//! is in an application secret only this application reads, copied by every unit to a 0600
//! file before the leader turns authentication on (the gateway refuses the charm's
//! certificates then: `etcdkit::rpc`); the shared client certificate of `db`, `proxy` and
//! `prometheus` (and of package-client-credentials) gets a user with the root role first, so
//! those clients go on as before.

use crate::juju::{self, Bag};
use crate::pki;
use crate::unit::status::Level;
use anyhow::{Context as _, Result};
use etcdkit::client::Client;
use std::collections::{BTreeMap, BTreeSet};

mod auth;
mod keys;
mod request;
use crate::pki::authority::sha16;
pub use auth::sync_password;
use auth::{cert_name, ensure_auth, grant, revoke};
use keys::*;
pub use keys::{Grant, ENDPOINT};
pub use request::{leaky, read_request, NotServed, Want};

/// What one leader pass works with.
struct Pass<'a> {
    cfg: &'a crate::config::Config,
    app: String,
    peer: String,
    app_bag: Bag,
    client: Client,
    ep: String,
    version: String,
    cluster_id: u64,
    members: Vec<etcdkit::client::Member>,
    notes: Vec<(Level, String)>,
}

/// The leader's side: every `etcd-client` relation served or refused, the grants of gone
/// relations undone. Answers what the unit's status should say.
/// `broken`: the relation whose relation-broken hook this is (gone, though Juju still lists
/// it during that hook).
pub fn reconcile(
    unit: &str,
    cfg: &crate::config::Config,
    broken: Option<&str>,
) -> Result<Vec<(Level, String)>> {
    let mut rels = juju::relation_ids(ENDPOINT)?;
    rels.retain(|r| Some(r.as_str()) != broken);
    let Some(peer) = juju::relation_ids(PEER)?.into_iter().next() else {
        return Ok(vec![]);
    };
    let app = unit.split('/').next().unwrap_or(unit).to_string();
    let app_bag = juju::relation_get(&peer, &app, true)?;
    let recorded: BTreeMap<String, Grant> = match app_bag.get(GRANTS) {
        Some(s) if !s.is_empty() => serde_json::from_str(s)
            .with_context(|| format!("the peer data's {GRANTS} cannot be read"))?,
        _ => BTreeMap::new(),
    };
    if rels.is_empty() && recorded.is_empty() {
        return Ok(vec![]);
    }
    let (client, ep) = local_client(cfg)?;
    let had_credentials = client.over_grpc();
    let status = client.status(&ep)?;
    let members = client.member_list(&ep)?;
    let units = juju::relation_list(&peer)?
        .into_iter()
        .map(|u| Ok((juju::relation_get(&peer, &u, false)?, u)))
        .collect::<Result<Vec<(Bag, String)>>>()?;
    // the charm's own certificates' names: root users, never a client's
    let mut own_names: BTreeSet<String> = cert_name("client.crt")?.into_iter().collect();
    own_names.extend(cert_name("server.crt")?);
    own_names.extend(
        units
            .iter()
            .filter_map(|(b, _)| b.get(SERVER_CN).filter(|n| !n.is_empty()).cloned()),
    );
    let mut pass = Pass {
        cfg,
        app,
        peer,
        app_bag,
        client,
        ep,
        version: status.version,
        cluster_id: status.header.cluster_id,
        members,
        notes: vec![],
    };
    let shared_cns: Vec<String> = own_names.into_iter().collect();
    let wants = pass.wants(&rels, &shared_cns)?;
    let mut grants = pass.undo(&rels, &recorded, &wants)?;
    let mut writes = Bag::new();
    if !wants.is_empty() {
        let (client, ep) = (&pass.client, &pass.ep);
        let digests: Vec<(String, Option<String>)> = units
            .iter()
            .map(|(b, u)| (u.clone(), b.get(READY).cloned()))
            .collect();
        let state = auth::State {
            root_names: &shared_cns,
            units: &digests,
            cluster_id: pass.cluster_id,
        };
        if let Some(wait) = ensure_auth(client, ep, &pass.app_bag, &state, &mut writes)? {
            pass.notes.push((Level::Waiting, wait));
            write_grants(&pass.peer, &pass.app_bag, &grants, writes)?;
            return Ok(pass.notes);
        }
        // authentication may have just been turned on: a client that speaks it (gRPC, root)
        if !had_credentials {
            (pass.client, pass.ep) = local_client(cfg)?;
        }
        pass.serve(&wants, &mut grants)?;
    }
    write_grants(&pass.peer, &pass.app_bag, &grants, writes)?;
    Ok(pass.notes)
}

impl Pass<'_> {
    /// What each live relation asks, checked; refusals and waits into the notes.
    fn wants(
        &mut self,
        rels: &[String],
        shared_cns: &[String],
    ) -> Result<BTreeMap<String, (String, Want)>> {
        let trust = self.app_bag.get("trust").cloned().unwrap_or_default();
        let local_ca = std::fs::read_to_string(pki::path("ca.crt")).context("reading ca.crt")?;
        let trusted: BTreeSet<String> = crate::pki::authority::split(&trust)
            .intersection(&crate::pki::authority::split(&local_ca))
            .cloned()
            .collect();
        let mut reserved: BTreeSet<String> = shared_cns.iter().cloned().collect();
        reserved.insert("root".into());
        reserved.extend(
            self.client
                .member_list(&self.ep)?
                .into_iter()
                .map(|m| m.name),
        );
        let now = hostkit::clock::now() as i64;
        let mut wants = BTreeMap::new();
        let mut taken: BTreeMap<String, String> = BTreeMap::new();
        for rel in rels {
            let Some(remote) = juju::relation_remote_app(rel)? else {
                continue;
            };
            if leaky(&self.version) && !self.cfg.etcd_client_allow_vulnerable_etcd {
                self.notes.push((Level::Blocked, format!(
                    "etcd-client {remote}: refused: etcd {} has known access-control bypasses (GHSA-xg4h-6gfc-h4m8); upgrade etcd or set etcd_client_allow_vulnerable_etcd", self.version
                )));
                continue;
            }
            let bag = juju::relation_get(rel, &remote, true)?;
            let Some(cert) = self.mtls_cert(&remote, &bag)? else {
                continue;
            };
            let full = self.cfg.etcd_client_full_access.contains(&remote);
            match read_request(
                &remote,
                &bag,
                cert.as_deref(),
                &trusted,
                &reserved,
                full,
                now,
            ) {
                Ok(w) => {
                    if let Some(other) = taken.get(&w.user) {
                        self.notes.push((Level::Blocked, format!(
                            "etcd-client {remote}: refused: its certificate's common name {:?} is {other}'s too", w.user
                        )));
                        continue;
                    }
                    taken.insert(w.user.clone(), remote.clone());
                    wants.insert(rel.clone(), (remote, w));
                }
                Err(NotServed::Waiting(s)) => self
                    .notes
                    .push((Level::Waiting, format!("etcd-client: {s}"))),
                Err(NotServed::Refused(s)) => {
                    juju::log("WARNING", &s);
                    self.notes.push((Level::Blocked, s));
                }
            }
        }
        Ok(wants)
    }

    /// The requirer's certificate from its `secret-mtls`: `Some(None)` when it names none
    /// yet, `None` (noted) when the secret is not shared with this application yet.
    fn mtls_cert(&mut self, remote: &str, bag: &Bag) -> Result<Option<Option<String>>> {
        let Some(id) = bag.get("secret-mtls").filter(|s| !s.is_empty()) else {
            return Ok(Some(None));
        };
        match juju::secret_get(id) {
            Ok(c) => Ok(Some(Some(c.get("mtls-cert").cloned().unwrap_or_default()))),
            // not (yet) granted to this relation: the requirer's next hook does
            Err(e) if e.stderr_contains("not found") || e.stderr_contains("permission denied") => {
                self.notes.push((
                    Level::Waiting,
                    format!("etcd-client: waiting for {remote} to share its secret-mtls"),
                ));
                Ok(None)
            }
            Err(e) => Err(e).with_context(|| format!("reading {remote}'s secret-mtls")),
        }
    }

    /// The users and roles of gone relations (and of ones whose user or range changed) go,
    /// with the secrets given to gone ones. Answers the grants that remain.
    fn undo(
        &self,
        rels: &[String],
        recorded: &BTreeMap<String, Grant>,
        wants: &BTreeMap<String, (String, Want)>,
    ) -> Result<BTreeMap<String, Grant>> {
        let mut grants = recorded.clone();
        for (rel, g) in recorded {
            let live = rels.contains(rel);
            let changed = wants.get(rel).is_some_and(|(_, w)| {
                w.user != g.user || b64(&w.key) != g.key || b64(&w.range_end) != g.range_end
            });
            if live && !changed {
                continue;
            }
            revoke(&self.client, &self.ep, g)?;
            if !live {
                for id in [&g.user_secret, &g.tls_secret] {
                    if !id.is_empty() {
                        juju::secret_remove(id)?;
                    }
                }
                grants.remove(rel);
            }
            juju::log(
                "INFO",
                &format!("etcd-client: user {} and role {} removed", g.user, g.role),
            );
        }
        Ok(grants)
    }

    /// Each wanted relation's role and user, its secrets and its answer.
    fn serve(
        &self,
        wants: &BTreeMap<String, (String, Want)>,
        grants: &mut BTreeMap<String, Grant>,
    ) -> Result<()> {
        let trust = self.app_bag.get("trust").cloned().unwrap_or_default();
        let endpoints = member_endpoints(&self.members);
        for (rel, (remote, w)) in wants {
            let tag = rel.replace(':', "-");
            let mut g = grants.get(rel).cloned().unwrap_or(Grant {
                app: remote.clone(),
                user: String::new(),
                role: String::new(),
                key: String::new(),
                range_end: String::new(),
                user_secret: String::new(),
                tls_secret: String::new(),
                served: String::new(),
            });
            g.user = w.user.clone();
            g.role = format!("etcd-client-{tag}");
            g.key = b64(&w.key);
            g.range_end = b64(&w.range_end);
            // All of it done already for this cluster (a restore makes a new one): nothing
            // to ask etcd or Juju.
            let served = sha16(&format!(
                "{} {} {} {} {} {} {} {trust} {endpoints}",
                self.cluster_id, g.user, g.role, g.key, g.range_end, self.version, rel
            ));
            if g.served == served && !g.user_secret.is_empty() && !g.tls_secret.is_empty() {
                grants.insert(rel.clone(), g);
                continue;
            }
            grant(&self.client, &self.ep, &g)?;
            let user = Bag::from([("username".to_string(), g.user.clone())]);
            g.user_secret = shared_secret(
                &g.user_secret,
                &format!("etcd-client-user-{tag}"),
                rel,
                user,
            )?;
            let ca = Bag::from([("tls-ca".to_string(), trust.clone())]);
            g.tls_secret =
                shared_secret(&g.tls_secret, &format!("etcd-client-tls-{tag}"), rel, ca)?;
            let theirs = juju::relation_get(rel, &self.app, true)?;
            juju::relation_update_app(
                rel,
                &theirs,
                Bag::from([
                    ("endpoints".to_string(), endpoints.clone()),
                    ("version".to_string(), self.version.clone()),
                    ("secret-user".to_string(), g.user_secret.clone()),
                    ("secret-tls".to_string(), g.tls_secret.clone()),
                ]),
            )?;
            g.served = served;
            grants.insert(rel.clone(), g);
        }
        Ok(())
    }
}

fn write_grants(
    peer: &str,
    app_bag: &Bag,
    grants: &BTreeMap<String, Grant>,
    mut writes: Bag,
) -> Result<()> {
    let v = if grants.is_empty() {
        String::new()
    } else {
        serde_json::to_string(grants)?
    };
    writes.insert(GRANTS.into(), v);
    Ok(juju::relation_update_app(peer, app_bag, writes)?)
}

/// An application secret with `content`, granted to `rel`: the one `id` names (new content
/// only when it changed), or a new one.
fn shared_secret(id: &str, label: &str, rel: &str, content: Bag) -> Result<String> {
    let known = if id.is_empty() {
        juju::secret_id_by_label(label)?
    } else {
        Some(id.to_string())
    };
    let id = match known {
        Some(id) => {
            if juju::secret_get_by_label(label)?.as_ref() != Some(&content) {
                juju::secret_set(&id, &content)?;
            }
            id
        }
        // new: its content is the one given
        None => juju::secret_add(label, &content)?,
    };
    juju::secret_grant(&id, rel)?;
    Ok(id)
}

fn local_client(cfg: &crate::config::Config) -> Result<(Client, String)> {
    let ep = crate::unit::endpoint(&crate::unit::peer_address()?, cfg.port);
    Ok((pki::tls_client()?, ep))
}

/// The client URLs of the started members, comma-separated.
fn member_endpoints(members: &[etcdkit::client::Member]) -> String {
    let mut urls: Vec<String> = members
        .iter()
        .filter(|m| m.started())
        .filter_map(|m| m.client_url())
        .collect();
    urls.sort();
    urls.join(",")
}

#[cfg(test)]
mod tests;
