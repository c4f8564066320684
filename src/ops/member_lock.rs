//! One member down at a time, whatever takes it down: the rolling turn the leader grants,
//! the `install` and `snap-upgrade` actions, a storage detach moving the data. Each holds a
//! lock in etcd itself while its member is away: the key `etcd-charm/member-down` (value:
//! the unit, what it does and a token), created only if absent (a transaction on its
//! create revision) and bound to a lease of `TTL_SECS`, so a holder killed mid-way frees
//! it when the lease runs out. Released when the member is back. A unit finds the lock it
//! holds itself from an earlier, killed operation and takes it over (Juju runs one hook or
//! action of a unit at a time). A health check before taking a member down still comes
//! first (`reconcile::other_member_down`): the lock closes the instant between two such
//! checks that each saw every other member healthy.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use etcdkit::client::Client;
use serde_json::{json, Value};

pub const KEY: &str = "etcd-charm/member-down";
/// Longer than any one member's restart, health check or data move the charm makes.
pub const TTL_SECS: u64 = 600;

/// The lock, held by this process until dropped (released then, best effort).
pub struct Held {
    client: Client,
    /// where to release it: the member it was taken at, and where that member answers
    /// after a restart that moved its client port (`also`)
    eps: Vec<String>,
    /// the lease the key is bound to: revoking it deletes the key
    lease: String,
}

impl Held {
    /// Another endpoint to release the lock at, tried after the first.
    pub fn also(&mut self, ep: &str) {
        if !self.eps.iter().any(|e| e == ep) {
            self.eps.push(ep.to_string());
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut last = None;
        for ep in &self.eps {
            match self
                .client
                .post(ep, "/v3/lease/revoke", json!({"ID": self.lease}))
            {
                Ok(_) => return,
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            crate::juju::log(
                "WARNING",
                &format!("cannot release the member-down lock ({e}); it frees itself within {TTL_SECS} s"),
            );
        }
    }
}

/// Takes the lock for `unit` doing `what`: `Ok(Err(holder))` names who holds it now.
pub fn take(
    client: &Client,
    ep: &str,
    unit: &str,
    what: &str,
) -> anyhow::Result<Result<Held, String>> {
    let lease = client.post(ep, "/v3/lease/grant", json!({"TTL": TTL_SECS}))?;
    let id = lease
        .get("ID")
        .and_then(|v| {
            v.as_str()
                .map(String::from)
                .or_else(|| v.as_i64().map(|n| n.to_string()))
        })
        .ok_or_else(|| anyhow::anyhow!("etcd granted no lease: {lease}"))?;
    let value = format!("{unit} {what} {:016x}", rand::random::<u64>());
    let put = json!([{"request_put": {"key": B64.encode(KEY), "value": B64.encode(&value), "lease": id}}]);
    let free = json!({"key": B64.encode(KEY), "target": "CREATE", "result": "EQUAL", "create_revision": "0"});
    let r = client.post(
        ep,
        "/v3/kv/txn",
        json!({"compare": [free], "success": put, "failure": [{"request_range": {"key": B64.encode(KEY)}}]}),
    )?;
    let held = || Held {
        client: client.clone(),
        eps: vec![ep.to_string()],
        lease: id.clone(),
    };
    if r.get("succeeded").and_then(Value::as_bool) == Some(true) {
        return Ok(Ok(held()));
    }
    let holder = r
        .pointer("/responses/0/response_range/kvs/0/value")
        .and_then(Value::as_str)
        .and_then(|v| B64.decode(v).ok())
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default();
    if holder.split(' ').next() == Some(unit) {
        // This unit's own, from an operation that was killed: taken over.
        let mine = json!({"key": B64.encode(KEY), "target": "VALUE", "result": "EQUAL", "value": B64.encode(&holder)});
        let r = client.post(ep, "/v3/kv/txn", json!({"compare": [mine], "success": put}))?;
        if r.get("succeeded").and_then(Value::as_bool) == Some(true) {
            return Ok(Ok(held()));
        }
    }
    // The lease no key was bound to: if the revoke fails it expires by itself, holding nothing.
    let _ = client.post(ep, "/v3/lease/revoke", json!({"ID": id}));
    // Bounded: the value is ours, but read back from etcd.
    let shown: String = holder
        .rsplit_once(' ')
        .map(|(h, _)| h)
        .unwrap_or(&holder)
        .chars()
        .take(200)
        .collect();
    Ok(Err(if shown.is_empty() {
        "another unit".into()
    } else {
        shown
    }))
}

/// Frees the lock when `unit` holds it from an operation that was killed and has now been
/// finished by other means (a restart turn resumed by the next hook): the other units'
/// turns need not wait for its lease to run out. Best effort: false when `ep` did not
/// answer (another endpoint may).
pub fn release_own(client: &Client, ep: &str, unit: &str) -> bool {
    let Ok(r) = client.post(ep, "/v3/kv/range", json!({"key": B64.encode(KEY)})) else {
        return false;
    };
    let Some(value) = r
        .pointer("/kvs/0/value")
        .and_then(Value::as_str)
        .and_then(|v| B64.decode(v).ok())
        .map(|v| String::from_utf8_lossy(&v).into_owned())
    else {
        return true;
    };
    if value.split(' ').next() != Some(unit) {
        return true;
    }
    let mine = json!({"key": B64.encode(KEY), "target": "VALUE", "result": "EQUAL", "value": B64.encode(&value)});
    let del = json!({"request_delete_range": {"key": B64.encode(KEY)}});
    client
        .post(
            ep,
            "/v3/kv/txn",
            json!({"compare": [mine], "success": [del]}),
        )
        .is_ok()
}
