//! etcd's HTTP/JSON gateway over HTTPS with this unit's client certificate (reqwest +
//! rustls). Knows the gateway's quirks (etcd-notes §0–§1): 64-bit integers arrive as
//! strings, default-valued fields are left out, errors carry a gRPC code.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};
use std::time::Duration;

pub use crate::api::{EtcdError, Result, Tls};

/// A u64 sent as a JSON string (or a number).
pub fn de_u64<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    let v = Value::deserialize(d)?;
    match v {
        Value::String(s) => s.parse().map_err(serde::de::Error::custom),
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| serde::de::Error::custom("not a u64")),
        Value::Null => Ok(0),
        other => Err(serde::de::Error::custom(format!(
            "expected a number, got {other}"
        ))),
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq)]
pub struct Member {
    #[serde(rename = "ID", deserialize_with = "de_u64", default)]
    pub id: u64,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "peerURLs", default)]
    pub peer_urls: Vec<String>,
    #[serde(rename = "clientURLs", default)]
    pub client_urls: Vec<String>,
    #[serde(rename = "isLearner", default)]
    pub is_learner: bool,
}

impl Member {
    /// Started members have a name and client URLs (etcd-notes §0.3).
    pub fn started(&self) -> bool {
        !self.name.is_empty() && !self.client_urls.is_empty()
    }
    /// A started member that votes: what "known peers" in a unit's status counts.
    pub fn is_voter(&self) -> bool {
        self.started() && !self.is_learner
    }
    /// The URL other machines reach its clients on (not a loopback one, if it has another).
    pub fn client_url(&self) -> Option<String> {
        self.client_urls
            .iter()
            .find(|u| !u.contains("127.0.0.1"))
            .or(self.client_urls.first())
            .cloned()
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct Status {
    #[serde(default)]
    pub version: String,
    #[serde(rename = "dbSize", deserialize_with = "de_u64", default)]
    pub db_size: u64,
    /// the database file's bytes in use (the rest are free pages a defrag gives back)
    #[serde(rename = "dbSizeInUse", deserialize_with = "de_u64", default)]
    pub db_size_in_use: u64,
    #[serde(deserialize_with = "de_u64", default)]
    pub leader: u64,
    #[serde(rename = "raftIndex", deserialize_with = "de_u64", default)]
    pub raft_index: u64,
    #[serde(rename = "isLearner", default)]
    pub is_learner: bool,
    #[serde(default)]
    pub header: Header,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct Header {
    #[serde(deserialize_with = "de_u64", default)]
    pub cluster_id: u64,
    #[serde(deserialize_with = "de_u64", default)]
    pub member_id: u64,
    #[serde(deserialize_with = "de_u64", default)]
    pub revision: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Alarm {
    #[serde(rename = "memberID", deserialize_with = "de_u64", default)]
    pub member_id: u64,
    #[serde(default)]
    pub alarm: String,
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::blocking::Client,
    /// for the gRPC client (the snapshot stream)
    tls: Tls,
    /// `/v3` requests over gRPC (with authentication on: `with_rpc`), else the gateway
    rpc: Option<crate::rpc::Rpc>,
}

impl Client {
    pub fn new(tls: &Tls, timeout: Duration) -> Result<Client> {
        // A bundle while the application moves from one CA to another: trust each.
        let cas = reqwest::Certificate::from_pem_bundle(&tls.ca_pem)
            .map_err(|e| EtcdError::Tls(format!("CA certificate: {e}")))?;
        if cas.is_empty() {
            return Err(EtcdError::Tls(
                "CA certificate: no certificate in ca.crt".into(),
            ));
        }
        let mut pem = tls.cert_pem.clone();
        pem.extend_from_slice(b"\n");
        pem.extend_from_slice(&tls.key_pem);
        let id = reqwest::Identity::from_pem(&pem)
            .map_err(|e| EtcdError::Tls(format!("client certificate: {e}")))?;
        let mut builder = reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false);
        for ca in cas {
            builder = builder.add_root_certificate(ca);
        }
        let http = builder
            .identity(id)
            .connect_timeout(Duration::from_secs(2))
            .timeout(timeout)
            .build()
            .map_err(|e| EtcdError::Tls(e.to_string()))?;
        Ok(Client {
            http,
            tls: tls.clone(),
            rpc: None,
        })
    }

    /// This client with its `/v3` requests sent over gRPC (`rpc`), authenticated as
    /// `credentials` when given, else by its certificate's Common Name: what works once etcd
    /// authentication is on, when the gateway refuses certificates with a Common Name.
    pub fn with_rpc(
        mut self,
        credentials: Option<crate::rpc::Credentials>,
        timeout: Duration,
    ) -> Client {
        self.rpc = Some(crate::rpc::Rpc::new(&self.tls, timeout, credentials));
        self
    }

    /// Whether `/v3` requests go over gRPC (`with_rpc`).
    pub fn over_grpc(&self) -> bool {
        self.rpc.is_some()
    }

    /// The `token` metadata for a gRPC stream to `endpoint` (the snapshot), when this client
    /// authenticates with a password and etcd authentication is on.
    pub fn token(&self, endpoint: &str) -> Result<Option<String>> {
        match &self.rpc {
            Some(r) => r.token(endpoint),
            None => Ok(None),
        }
    }

    pub fn tls(&self) -> &Tls {
        &self.tls
    }

    pub fn post(&self, endpoint: &str, path: &str, body: Value) -> Result<Value> {
        if let Some(rpc) = self.rpc.as_ref().filter(|_| path.starts_with("/v3/")) {
            return rpc.post(endpoint, path, body);
        }
        let url = format!("{}{path}", endpoint.trim_end_matches('/'));
        Self::answer(endpoint, self.http.post(&url).json(&body).send())
    }

    /// A GET of `path` answered with JSON (etcd's v2 API).
    pub fn get_json(&self, endpoint: &str, path: &str) -> Result<Value> {
        let url = format!("{}{path}", endpoint.trim_end_matches('/'));
        Self::answer(endpoint, self.http.get(&url).send())
    }

    /// etcd's JSON answer, or its error (the message etcd gave, with the HTTP status).
    fn answer(endpoint: &str, sent: reqwest::Result<reqwest::blocking::Response>) -> Result<Value> {
        let transport = |e| EtcdError::Transport {
            endpoint: endpoint.into(),
            source: e,
        };
        let resp = sent.map_err(transport)?;
        let status = resp.status().as_u16();
        let text = resp.text().map_err(transport)?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        if status >= 300 {
            let message = v
                .get("error")
                .or_else(|| v.get("message"))
                .and_then(Value::as_str)
                .unwrap_or(text.trim())
                .to_string();
            return Err(EtcdError::Api {
                endpoint: endpoint.into(),
                status,
                message,
            });
        }
        Ok(v)
    }

    fn decode<T: for<'de> Deserialize<'de>>(endpoint: &str, v: Value) -> Result<T> {
        serde_json::from_value(v.clone()).map_err(|e| EtcdError::Decode {
            endpoint: endpoint.into(),
            detail: format!("{e}: {v}"),
        })
    }

    /// `/health`: true when the member is healthy (has a leader, no alarms).
    pub fn health(&self, endpoint: &str) -> Result<bool> {
        let url = format!("{}/health", endpoint.trim_end_matches('/'));
        let resp = self
            .http
            .get(&url)
            .send()
            .map_err(|e| EtcdError::Transport {
                endpoint: endpoint.into(),
                source: e,
            })?;
        let v: Value = resp.json().unwrap_or(Value::Null);
        Ok(v.get("health").and_then(Value::as_str) == Some("true"))
    }

    pub fn member_list(&self, endpoint: &str) -> Result<Vec<Member>> {
        let v = self.post(
            endpoint,
            "/v3/cluster/member/list",
            json!({"linearizable": true}),
        )?;
        Self::decode(endpoint, v.get("members").cloned().unwrap_or(json!([])))
    }

    /// Adds a member (a learner by default); answers the new member and the full list.
    pub fn member_add(
        &self,
        endpoint: &str,
        peer_url: &str,
        learner: bool,
    ) -> Result<(Member, Vec<Member>)> {
        let v = self.post(
            endpoint,
            "/v3/cluster/member/add",
            json!({"peerURLs": [peer_url], "isLearner": learner}),
        )?;
        let m = Self::decode(endpoint, v.get("member").cloned().unwrap_or(Value::Null))?;
        let all = Self::decode(endpoint, v.get("members").cloned().unwrap_or(json!([])))?;
        Ok((m, all))
    }

    pub fn member_remove(&self, endpoint: &str, id: u64) -> Result<()> {
        self.post(
            endpoint,
            "/v3/cluster/member/remove",
            json!({"ID": id.to_string()}),
        )
        .map(|_| ())
    }

    pub fn member_promote(&self, endpoint: &str, id: u64) -> Result<()> {
        self.post(
            endpoint,
            "/v3/cluster/member/promote",
            json!({"ID": id.to_string()}),
        )
        .map(|_| ())
    }

    pub fn member_update(&self, endpoint: &str, id: u64, peer_urls: &[String]) -> Result<()> {
        self.post(
            endpoint,
            "/v3/cluster/member/update",
            json!({"ID": id.to_string(), "peerURLs": peer_urls}),
        )
        .map(|_| ())
    }

    pub fn status(&self, endpoint: &str) -> Result<Status> {
        let v = self.post(endpoint, "/v3/maintenance/status", json!({}))?;
        Self::decode(endpoint, v)
    }

    /// The raft leader's member, as `endpoint` sees it (None while there is no leader).
    pub fn leader_member(&self, endpoint: &str) -> Result<Option<Member>> {
        let members = self.member_list(endpoint)?;
        let leader = self.status(endpoint)?.leader;
        Ok(members.into_iter().find(|m| m.id == leader && leader != 0))
    }

    pub fn alarms(&self, endpoint: &str) -> Result<Vec<Alarm>> {
        let v = self.post(endpoint, "/v3/maintenance/alarm", json!({"action": "GET"}))?;
        Self::decode(endpoint, v.get("alarms").cloned().unwrap_or(json!([])))
    }

    pub fn alarm_disarm(&self, endpoint: &str, a: &Alarm) -> Result<()> {
        self.post(
            endpoint,
            "/v3/maintenance/alarm",
            json!({"action": "DEACTIVATE", "memberID": a.member_id.to_string(), "alarm": a.alarm}),
        )
        .map(|_| ())
    }

    pub fn move_leader(&self, leader_endpoint: &str, target: u64) -> Result<()> {
        self.post(
            leader_endpoint,
            "/v3/maintenance/transfer-leadership",
            json!({"targetID": target.to_string()}),
        )
        .map(|_| ())
    }

    pub fn compact(&self, endpoint: &str, revision: u64, physical: bool) -> Result<()> {
        self.post(
            endpoint,
            "/v3/kv/compaction",
            json!({"revision": revision.to_string(), "physical": physical}),
        )
        .map(|_| ())
    }

    pub fn defrag(&self, endpoint: &str) -> Result<()> {
        self.post(endpoint, "/v3/maintenance/defragment", json!({}))
            .map(|_| ())
    }

    /// How many keys the whole keyspace held at `revision` (a count-only range over every
    /// key; an error once that revision is compacted away).
    pub fn count_at(&self, endpoint: &str, revision: u64) -> Result<u64> {
        let v = self.post(
            endpoint,
            "/v3/kv/range",
            json!({"key": "AA==", "range_end": "AA==", "count_only": true, "revision": revision.to_string()}),
        )?;
        /// etcd's JSON leaves a zero count out
        #[derive(Deserialize)]
        struct Counted {
            #[serde(deserialize_with = "de_u64", default)]
            count: u64,
        }
        Ok(Self::decode::<Counted>(endpoint, v)?.count)
    }

    /// The current revision as seen by `endpoint`.
    pub fn revision(&self, endpoint: &str) -> Result<u64> {
        let v = self.post(
            endpoint,
            "/v3/kv/range",
            json!({"key": "AA==", "limit": "1", "count_only": true}),
        )?;
        let h: Header = Self::decode(endpoint, v.get("header").cloned().unwrap_or(json!({})))?;
        Ok(h.revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_decode_gateway_json() {
        let v = json!([{"ID":"13510015062231200447","name":"etcd0","peerURLs":["https://10.0.0.1:2380"],"clientURLs":["https://10.0.0.1:2379"]},
                        {"ID":"42","peerURLs":["https://10.0.0.2:2380"],"isLearner":true}]);
        let m: Vec<Member> = serde_json::from_value(v).unwrap();
        assert_eq!(m[0].id, 13510015062231200447);
        assert!(m[0].started() && !m[0].is_learner);
        assert!(!m[1].started() && m[1].is_learner);
    }
}
