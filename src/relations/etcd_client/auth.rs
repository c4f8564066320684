//! etcd authentication for `etcd-client`: root's password on every unit, authentication
//! turned on in order, each client's role and user granted and revoked.

use super::keys::{b64, Grant, AUTH_ON, PEER, READY, ROOT_LABEL, ROOT_SECRET, SERVER_CN};
use crate::juju::{self, Bag};
use crate::pki::authority::sha16;
use crate::pki::{self, PASSWORD_FILE};
use anyhow::{Context as _, Result};
use etcdkit::client::Client;
use serde_json::{json, Value};

/// Every unit, early in every hook: this unit's copy of root's password follows the secret
/// the leader made (0600 from the moment it exists), and the unit says in the peer data
/// which one it has.
/// `quick` (update-status): a unit that has its copy already asks nothing (the password
/// never changes; a new secret comes with a peer relation hook).
pub fn sync_password(unit: &str, quick: bool) -> Result<()> {
    if quick && pki::path(PASSWORD_FILE).exists() {
        return Ok(());
    }
    let Some(peer) = juju::relation_ids(PEER)?.into_iter().next() else {
        return Ok(());
    };
    let app = unit.split('/').next().unwrap_or(unit);
    let app_bag = juju::relation_get(&peer, app, true)?;
    let Some(id) = app_bag.get(ROOT_SECRET).filter(|s| !s.is_empty()) else {
        return Ok(());
    };
    let content = juju::secret_get(id).context("reading root's etcd password secret")?;
    let pw = content
        .get("password")
        .filter(|p| p.len() >= 32)
        .ok_or_else(|| anyhow::anyhow!("root's etcd password secret {id} holds no password"))?;
    pki::update_file(&pki::path(PASSWORD_FILE), pw, 0o600)?;
    let mut said = Bag::from([(READY.to_string(), sha16(pw))]);
    if let Some(cn) = cert_name("server.crt")? {
        said.insert(SERVER_CN.to_string(), cn);
    }
    let mine = juju::relation_get(&peer, unit, false)?;
    juju::relation_update(&peer, &mine, said)?;
    Ok(())
}

/// The Common Name of the charm's certificate `file` (in the PKI directory), if it is there:
/// the charm's own requests go as its server certificate's, and the shared client
/// certificate's serves `db` and the rest; the leader gives both the root role.
pub(super) fn cert_name(file: &str) -> Result<Option<String>> {
    let Some(pem) = hostkit::fs::read_if_present(&pki::path(file))? else {
        return Ok(None);
    };
    Ok(Some(charmkit::pki::common_name(&pem)?).filter(|cn| !cn.is_empty()))
}

/// Users with the root role for the names of the charm's own certificates (no password: the
/// certificate names them).
fn root_users(client: &Client, ep: &str, names: &[String]) -> Result<()> {
    for cn in names {
        let user = json!({"name": cn, "options": {"no_password": true}});
        auth(client, ep, "/v3/auth/user/add", user)?;
        auth(
            client,
            ep,
            "/v3/auth/user/grant",
            json!({"user": cn, "role": "root"}),
        )?;
    }
    Ok(())
}

/// root's password: from the secret the peer data names, or a new secret (32 random bytes,
/// base64) whose id goes into `writes`.
fn root_password(app_bag: &Bag, writes: &mut Bag) -> Result<String> {
    let id = match app_bag.get(ROOT_SECRET).filter(|s| !s.is_empty()) {
        Some(id) => id.clone(),
        None => {
            let pw = {
                use rand::Rng;
                let bytes: [u8; 32] = rand::thread_rng().gen();
                b64(&bytes)
            };
            let id = match juju::secret_id_by_label(ROOT_LABEL)? {
                Some(id) => id,
                None => juju::secret_add(ROOT_LABEL, &Bag::from([("password".to_string(), pw)]))?,
            };
            writes.insert(ROOT_SECRET.into(), id.clone());
            id
        }
    };
    let pw = juju::secret_get(&id)?
        .get("password")
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("root's etcd password secret {id} holds no password"))?;
    Ok(pw)
}

/// One etcd auth request; "already exists" (a step done before) is no error.
fn auth(client: &Client, ep: &str, path: &str, body: Value) -> Result<()> {
    match client.post(ep, path, body) {
        Ok(_) => Ok(()),
        Err(e) if e.message_contains("already exists") || e.message_contains("already granted") => {
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("etcd {path}")),
    }
}

/// Authentication on, in order: root's secret, every unit's copy of it, the root user, the
/// shared client certificate's user with the root role, then `auth enable`. `Some` says what
/// it waits for.
/// What authentication must be made sure of: the users with the root role (the charm's own
/// certificates' names), each peer unit with the digest of the root password it holds, and
/// the cluster it is for.
pub(super) struct State<'a> {
    pub root_names: &'a [String],
    pub units: &'a [(String, Option<String>)],
    pub cluster_id: u64,
}

pub(super) fn ensure_auth(
    client: &Client,
    ep: &str,
    app_bag: &Bag,
    st: &State,
    writes: &mut Bag,
) -> Result<Option<String>> {
    let pw = root_password(app_bag, writes)?;
    // this unit's copy first: its own requests need it once auth is on
    pki::update_file(&pki::path(PASSWORD_FILE), &pw, 0o600)?;
    let want = sha16(&pw);
    let behind: Vec<String> = st
        .units
        .iter()
        .filter(|(_, d)| d.as_ref() != Some(&want))
        .map(|(u, _)| u.clone())
        .collect();
    let names = st.root_names;
    let cluster_id = st.cluster_id;
    // Done already for this cluster (a restore makes a new one), password and names: nothing
    // to ask etcd.
    let state = sha16(&format!("{cluster_id} {want} {}", names.join(" ")));
    if app_bag.get(AUTH_ON) == Some(&state) {
        return Ok(None);
    }
    // etcd's own word, not the peer data's: a restored snapshot may hold either state
    let root = client.clone().with_rpc(
        Some(etcdkit::rpc::Credentials {
            user: "root".into(),
            password: pw.clone(),
        }),
        std::time::Duration::from_secs(5),
    );
    if root.token(ep)?.is_some() {
        root_users(&root, ep, names)?;
        writes.insert(AUTH_ON.into(), state);
        return Ok(None);
    }
    if !behind.is_empty() {
        return Ok(Some(format!(
            "etcd-client: waiting for {} to hold root's etcd credentials before authentication is turned on",
            behind.join(", ")
        )));
    }
    let user = json!({"name": "root", "password": pw});
    auth(&root, ep, "/v3/auth/user/add", user)?;
    auth(
        &root,
        ep,
        "/v3/auth/user/grant",
        json!({"user": "root", "role": "root"}),
    )?;
    root_users(&root, ep, names)?;
    auth(&root, ep, "/v3/auth/enable", json!({}))?;
    juju::log("INFO", "etcd-client: etcd authentication enabled");
    writes.insert(AUTH_ON.into(), state);
    Ok(None)
}

/// The client's role (read-write on its range) and user (no password: its certificate names
/// it), the role granted.
pub(super) fn grant(client: &Client, ep: &str, g: &Grant) -> Result<()> {
    auth(client, ep, "/v3/auth/role/add", json!({"name": g.role}))?;
    auth(
        client,
        ep,
        "/v3/auth/role/grant",
        json!({"name": g.role,
        "perm": {"permType": "READWRITE", "key": g.key, "range_end": g.range_end}}),
    )?;
    auth(
        client,
        ep,
        "/v3/auth/user/add",
        json!({"name": g.user, "options": {"no_password": true}}),
    )?;
    auth(
        client,
        ep,
        "/v3/auth/user/grant",
        json!({"user": g.user, "role": g.role}),
    )
}

/// The user and role go; ones already gone are no error.
pub(super) fn revoke(client: &Client, ep: &str, g: &Grant) -> Result<()> {
    for (path, body) in [
        ("/v3/auth/user/delete", json!({"name": g.user})),
        ("/v3/auth/role/delete", json!({"role": g.role})),
    ] {
        match client.post(ep, path, body) {
            Ok(_) => {}
            Err(e) if e.message_contains("not found") => {}
            Err(e) => return Err(e).with_context(|| format!("etcd {path}")),
        }
    }
    Ok(())
}
