//! User secrets, as Juju 3.6's `juju add-secret`, `grant-secret` and `revoke-secret` make
//! them (cmd/juju/secrets/add.go, grant.go): owned by the model, named (the name is the
//! secret's label, unique in the model), readable by the applications they are granted to,
//! whose charms read them with `secret-get <uri>` (typically given in a config option of type
//! `secret`).

use super::common::*;
use crate::tools::secrets::{check_size, new_id, normalize, valid_key, SErr};

/// The owner of user secrets.
pub const MODEL_OWNER: &str = "model";

/// `add-secret <name> key=value... [--info text]`: prints the new secret's URI.
pub(super) fn add(ctl: &Arc<Ctl>, args: &[String], env_model: &Option<String>) -> Result<Reply> {
    let p = parse(&[value(&["info"])], args)?;
    let model = model_name(ctl, &p, env_model)?;
    let Some((name, items)) = p.positional.split_first() else {
        bail!("missing secret name");
    };
    let mut content = Bag::new();
    for item in items {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| anyhow!("key value {item:?} not valid"))?;
        let (key, v) = match k.strip_suffix("#base64") {
            Some(key) => {
                use base64::Engine;
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map_err(|e| anyhow!("invalid base64 value for key {key:?}: {e}"))?;
                (
                    key,
                    String::from_utf8(raw).map_err(|_| anyhow!("key {key:?}: not text"))?,
                )
            }
            None => (k, v.to_string()),
        };
        if !valid_key(key) {
            bail!("key {key:?} not valid");
        }
        content.insert(key.to_string(), v);
    }
    if content.is_empty() {
        bail!("missing secret value");
    }
    check_size(&content).map_err(|e| match e {
        SErr::Usage(m) | SErr::Run(m) => anyhow!(m),
    })?;
    let id = new_id();
    ctl.model_mut(&model, |m| {
        if m.secrets
            .values()
            .any(|s| s.owner == MODEL_OWNER && s.label.as_deref() == Some(name.as_str()))
        {
            bail!("secret with name {name:?} already exists");
        }
        m.secrets.insert(
            id.clone(),
            Secret {
                id: id.clone(),
                owner: MODEL_OWNER.into(),
                label: Some(name.clone()),
                description: p.value("info").map(String::from),
                expire: None,
                rotate: None,
                revisions: BTreeMap::from([(1, content)]),
                grants: Default::default(),
                consumer_labels: Default::default(),
                app_grants: Default::default(),
            },
        );
        Ok(Reply::ok(format!("{id}\n")))
    })
}

/// `grant-secret <name|uri> <app>[,<app>...]` and `revoke-secret`.
pub(super) fn grant(
    ctl: &Arc<Ctl>,
    grant: bool,
    args: &[String],
    env_model: &Option<String>,
) -> Result<Reply> {
    let p = parse(&[], args)?;
    let model = model_name(ctl, &p, env_model)?;
    let [which, apps] = p.positional.as_slice() else {
        bail!("expected a secret name or URI and the applications");
    };
    ctl.model_mut(&model, |m| {
        let id = m
            .secrets
            .values()
            .find(|s| {
                s.owner == MODEL_OWNER
                    && (s.id == normalize(which) || s.label.as_deref() == Some(which.as_str()))
            })
            .map(|s| s.id.clone())
            .ok_or_else(|| anyhow!("secret {which:?} not found"))?;
        for app in apps.split(',') {
            if !m.apps.contains_key(app) {
                bail!("application {app:?} not found");
            }
            let s = m.secrets.get_mut(&id).expect("found above");
            if grant {
                s.app_grants.insert(app.to_string());
            } else {
                s.app_grants.remove(app);
            }
        }
        Ok(Reply::ok(""))
    })
}
