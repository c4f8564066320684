//! etcd's v3 API over gRPC, spoken in the HTTP gateway's JSON: `Client::post` sends its
//! `/v3/...` requests here once etcd authentication is on, because the gateway then refuses
//! every client certificate that carries a Common Name (etcd's embed/serve.go, "CommonName
//! of client sending a request against gateway will be ignored"), and every certificate the
//! charm holds has one. The JSON becomes a protobuf message by the descriptors of
//! `proto/etcd.proto` (prost-reflect's proto3 JSON mapping, which is the gateway's: proto
//! field names, 64-bit integers as strings, bytes as base64, enums by name), so callers keep
//! one request format whichever way it travels.
//!
//! With credentials, each endpoint is authenticated once per client (etcd's simple tokens
//! are per member) and the token sent as the `token` metadata, which etcd prefers to the
//! certificate's Common Name; before authentication is enabled etcd answers
//! "authentication is not enabled" and requests go without a token.

use crate::api::{EtcdError, Result, Tls};
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/etcd.bin"));

/// The user and password `Rpc` authenticates as. Debug shows the user only.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <password>)", self.user)
    }
}

/// Per endpoint: a token, or `None` when etcd said authentication is not enabled.
type Tokens = Arc<Mutex<HashMap<String, Option<String>>>>;

#[derive(Clone)]
pub struct Rpc {
    tls: Tls,
    timeout: Duration,
    credentials: Option<Credentials>,
    tokens: Tokens,
    /// one runtime and one connection per endpoint for the life of the client
    rt: Arc<OnceLock<std::result::Result<tokio::runtime::Runtime, String>>>,
    channels: Arc<Mutex<HashMap<String, tonic::transport::Channel>>>,
}

const NOT_ENABLED: &str = "authentication is not enabled";

/// etcd's answers when the certificate's Common Name is no user allowed the request.
fn not_this_user(e: &EtcdError) -> bool {
    e.status() == Some(403)
        || e.message_contains("user name not found")
        || e.message_contains("user name is empty")
}
const BAD_TOKEN: &str = "invalid auth token";

impl Rpc {
    pub fn new(tls: &Tls, timeout: Duration, credentials: Option<Credentials>) -> Rpc {
        Rpc {
            tls: tls.clone(),
            timeout,
            credentials,
            tokens: Arc::default(),
            rt: Arc::default(),
            channels: Arc::default(),
        }
    }

    fn runtime(&self, endpoint: &str) -> Result<&tokio::runtime::Runtime> {
        self.rt
            .get_or_init(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| EtcdError::Unreachable {
                endpoint: endpoint.into(),
                detail: format!("starting the gRPC client's runtime: {e}"),
            })
    }

    /// The connection to `endpoint`, made on first use (inside the runtime).
    async fn channel(&self, endpoint: &str) -> Result<tonic::transport::Channel> {
        let cached = self
            .channels
            .lock()
            .ok()
            .and_then(|c| c.get(endpoint).cloned());
        if let Some(c) = cached {
            return Ok(c);
        }
        let unreachable = |detail: String| EtcdError::Unreachable {
            endpoint: endpoint.into(),
            detail,
        };
        let config = tls_config(&self.tls);
        let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| unreachable(format!("not an endpoint URL: {e}")))?
            .tls_config(config)
            .map_err(|e| unreachable(format!("TLS: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(self.timeout)
            .connect()
            .await
            .map_err(|e| unreachable(format!("connecting (gRPC): {}", chain(&e))))?;
        if let Ok(mut c) = self.channels.lock() {
            c.insert(endpoint.to_string(), channel.clone());
        }
        Ok(channel)
    }

    /// Sends the gateway request `path` with its JSON `body` to `endpoint` and answers the
    /// JSON the gateway would have.
    /// Sent first as the certificate's Common Name (no token: etcd's password check is a
    /// bcrypt and a raft round, hundreds of milliseconds); when etcd does not take that name
    /// for a user allowed the request and this client has credentials, with a token from
    /// then on.
    pub fn post(&self, endpoint: &str, path: &str, body: Value) -> Result<Value> {
        let token = self.cached(endpoint);
        match self.unary(endpoint, path, body.clone(), token.as_deref()) {
            // a token expires after etcd's --auth-token-ttl of idleness: once more, afresh
            Err(e) if token.is_some() && e.message_contains(BAD_TOKEN) => {
                self.forget(endpoint);
                let token = self.token(endpoint)?;
                self.unary(endpoint, path, body, token.as_deref())
            }
            Err(e) if token.is_none() && self.credentials.is_some() && not_this_user(&e) => {
                // what was learnt of this endpoint (authentication off) may be old news
                self.forget(endpoint);
                match self.token(endpoint)? {
                    Some(t) => self.unary(endpoint, path, body, Some(&t)),
                    None => Err(e),
                }
            }
            other => other,
        }
    }

    /// The token this client already holds for `endpoint`, if any.
    fn cached(&self, endpoint: &str) -> Option<String> {
        self.tokens
            .lock()
            .ok()
            .and_then(|t| t.get(endpoint).cloned())
            .flatten()
    }

    fn drop_channel(&self, endpoint: &str) {
        if let Ok(mut c) = self.channels.lock() {
            c.remove(endpoint);
        }
    }

    fn forget(&self, endpoint: &str) {
        if let Ok(mut t) = self.tokens.lock() {
            t.remove(endpoint);
        }
    }

    /// The token requests to `endpoint` carry (None without credentials or while etcd
    /// authentication is off): authenticated once, then kept.
    pub fn token(&self, endpoint: &str) -> Result<Option<String>> {
        let Some(c) = &self.credentials else {
            return Ok(None);
        };
        if let Some(t) = self
            .tokens
            .lock()
            .ok()
            .and_then(|t| t.get(endpoint).cloned())
        {
            return Ok(t);
        }
        let body = serde_json::json!({"name": c.user, "password": c.password});
        let token = match self.unary(endpoint, "/v3/auth/authenticate", body, None) {
            Ok(v) => Some(
                v.get("token")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            ),
            Err(e) if e.message_contains(NOT_ENABLED) => None,
            Err(e) => return Err(e),
        };
        if let Ok(mut t) = self.tokens.lock() {
            t.insert(endpoint.to_string(), token.clone());
        }
        Ok(token)
    }

    fn unary(&self, endpoint: &str, path: &str, body: Value, token: Option<&str>) -> Result<Value> {
        let (method, input, output) = method(path).ok_or_else(|| EtcdError::Decode {
            endpoint: endpoint.into(),
            detail: format!("{path} is not a request the charm sends over gRPC"),
        })?;
        let decode_err = |detail: String| EtcdError::Decode {
            endpoint: endpoint.into(),
            detail,
        };
        let request = DynamicMessage::deserialize(descriptor(input)?, body)
            .map_err(|e| decode_err(format!("request {path}: {e}")))?;
        let bytes = prost::Message::encode_to_vec(&request);
        let unreachable = |detail: String| EtcdError::Unreachable {
            endpoint: endpoint.into(),
            detail,
        };
        let answer = self.runtime(endpoint)?.block_on(async {
            let channel = self.channel(endpoint).await?;
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.map_err(|e| {
                self.drop_channel(endpoint);
                unreachable(format!("gRPC: {}", chain(&e)))
            })?;
            let mut req = tonic::Request::new(bytes);
            req.set_timeout(self.timeout);
            if let Some(t) = token {
                set_token(&mut req, t)
                    .ok_or_else(|| decode_err("etcd's auth token is not ASCII".into()))?;
            }
            let path = http::uri::PathAndQuery::from_static(method);
            grpc.unary(req, path, RawCodec)
                .await
                .map(tonic::Response::into_inner)
                .inspect_err(|s| {
                    if s.code() == tonic::Code::Unavailable {
                        self.drop_channel(endpoint);
                    }
                })
                .map_err(|s| EtcdError::Api {
                    endpoint: endpoint.into(),
                    status: http_status(s.code()),
                    message: s.message().to_string(),
                })
        })?;
        let reply = DynamicMessage::decode(descriptor(output)?, answer.as_slice())
            .map_err(|e| decode_err(format!("answer to {path}: {e}")))?;
        let opts = SerializeOptions::new()
            .use_proto_field_name(true)
            .stringify_64_bit_integers(true)
            .skip_default_fields(true);
        reply
            .serialize_with_options(serde_json::value::Serializer, &opts)
            .map_err(|e| decode_err(format!("answer to {path}: {e}")))
    }
}

fn pool() -> Result<&'static DescriptorPool> {
    static POOL: OnceLock<std::result::Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(DESCRIPTORS).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| EtcdError::Decode {
            endpoint: String::new(),
            detail: format!("the built-in etcd API descriptors: {e}"),
        })
}

fn descriptor(name: &str) -> Result<MessageDescriptor> {
    pool()?
        .get_message_by_name(&format!("etcdserverpb.{name}"))
        .ok_or_else(|| EtcdError::Decode {
            endpoint: String::new(),
            detail: format!("no message {name} in proto/etcd.proto"),
        })
}

/// The gRPC method, request and answer of each gateway path (etcd's rpc.proto `post:` lines).
const METHODS: &[(&str, &str, &str, &str)] = &[
    (
        "/v3/kv/range",
        "/etcdserverpb.KV/Range",
        "RangeRequest",
        "RangeResponse",
    ),
    (
        "/v3/kv/put",
        "/etcdserverpb.KV/Put",
        "PutRequest",
        "PutResponse",
    ),
    (
        "/v3/kv/deleterange",
        "/etcdserverpb.KV/DeleteRange",
        "DeleteRangeRequest",
        "DeleteRangeResponse",
    ),
    (
        "/v3/kv/txn",
        "/etcdserverpb.KV/Txn",
        "TxnRequest",
        "TxnResponse",
    ),
    (
        "/v3/kv/compaction",
        "/etcdserverpb.KV/Compact",
        "CompactionRequest",
        "CompactionResponse",
    ),
    (
        "/v3/lease/grant",
        "/etcdserverpb.Lease/LeaseGrant",
        "LeaseGrantRequest",
        "LeaseGrantResponse",
    ),
    (
        "/v3/lease/revoke",
        "/etcdserverpb.Lease/LeaseRevoke",
        "LeaseRevokeRequest",
        "LeaseRevokeResponse",
    ),
    (
        "/v3/kv/lease/revoke",
        "/etcdserverpb.Lease/LeaseRevoke",
        "LeaseRevokeRequest",
        "LeaseRevokeResponse",
    ),
    (
        "/v3/cluster/member/add",
        "/etcdserverpb.Cluster/MemberAdd",
        "MemberAddRequest",
        "MemberAddResponse",
    ),
    (
        "/v3/cluster/member/remove",
        "/etcdserverpb.Cluster/MemberRemove",
        "MemberRemoveRequest",
        "MemberRemoveResponse",
    ),
    (
        "/v3/cluster/member/update",
        "/etcdserverpb.Cluster/MemberUpdate",
        "MemberUpdateRequest",
        "MemberUpdateResponse",
    ),
    (
        "/v3/cluster/member/list",
        "/etcdserverpb.Cluster/MemberList",
        "MemberListRequest",
        "MemberListResponse",
    ),
    (
        "/v3/cluster/member/promote",
        "/etcdserverpb.Cluster/MemberPromote",
        "MemberPromoteRequest",
        "MemberPromoteResponse",
    ),
    (
        "/v3/maintenance/alarm",
        "/etcdserverpb.Maintenance/Alarm",
        "AlarmRequest",
        "AlarmResponse",
    ),
    (
        "/v3/maintenance/status",
        "/etcdserverpb.Maintenance/Status",
        "StatusRequest",
        "StatusResponse",
    ),
    (
        "/v3/maintenance/defragment",
        "/etcdserverpb.Maintenance/Defragment",
        "DefragmentRequest",
        "DefragmentResponse",
    ),
    (
        "/v3/maintenance/transfer-leadership",
        "/etcdserverpb.Maintenance/MoveLeader",
        "MoveLeaderRequest",
        "MoveLeaderResponse",
    ),
    (
        "/v3/auth/enable",
        "/etcdserverpb.Auth/AuthEnable",
        "AuthEnableRequest",
        "AuthEnableResponse",
    ),
    (
        "/v3/auth/authenticate",
        "/etcdserverpb.Auth/Authenticate",
        "AuthenticateRequest",
        "AuthenticateResponse",
    ),
    (
        "/v3/auth/user/add",
        "/etcdserverpb.Auth/UserAdd",
        "AuthUserAddRequest",
        "AuthUserAddResponse",
    ),
    (
        "/v3/auth/user/get",
        "/etcdserverpb.Auth/UserGet",
        "AuthUserGetRequest",
        "AuthUserGetResponse",
    ),
    (
        "/v3/auth/user/list",
        "/etcdserverpb.Auth/UserList",
        "AuthUserListRequest",
        "AuthUserListResponse",
    ),
    (
        "/v3/auth/user/delete",
        "/etcdserverpb.Auth/UserDelete",
        "AuthUserDeleteRequest",
        "AuthUserDeleteResponse",
    ),
    (
        "/v3/auth/user/grant",
        "/etcdserverpb.Auth/UserGrantRole",
        "AuthUserGrantRoleRequest",
        "AuthUserGrantRoleResponse",
    ),
    (
        "/v3/auth/role/add",
        "/etcdserverpb.Auth/RoleAdd",
        "AuthRoleAddRequest",
        "AuthRoleAddResponse",
    ),
    (
        "/v3/auth/role/get",
        "/etcdserverpb.Auth/RoleGet",
        "AuthRoleGetRequest",
        "AuthRoleGetResponse",
    ),
    (
        "/v3/auth/role/list",
        "/etcdserverpb.Auth/RoleList",
        "AuthRoleListRequest",
        "AuthRoleListResponse",
    ),
    (
        "/v3/auth/role/delete",
        "/etcdserverpb.Auth/RoleDelete",
        "AuthRoleDeleteRequest",
        "AuthRoleDeleteResponse",
    ),
    (
        "/v3/auth/role/grant",
        "/etcdserverpb.Auth/RoleGrantPermission",
        "AuthRoleGrantPermissionRequest",
        "AuthRoleGrantPermissionResponse",
    ),
];

fn method(path: &str) -> Option<(&'static str, &'static str, &'static str)> {
    METHODS
        .iter()
        .find(|m| m.0 == path)
        .map(|&(_, method, input, output)| (method, input, output))
}

/// The HTTP status etcd's gateway (grpc-gateway v1's HTTPStatusFromCode) gives a gRPC code,
/// so that callers tell errors apart the same way over either transport.
fn http_status(code: tonic::Code) -> u16 {
    use tonic::Code::*;
    match code {
        Ok => 200,
        Cancelled => 408,
        InvalidArgument | FailedPrecondition | OutOfRange => 400,
        DeadlineExceeded => 504,
        NotFound => 404,
        AlreadyExists | Aborted => 409,
        PermissionDenied => 403,
        Unauthenticated => 401,
        ResourceExhausted => 429,
        Unimplemented => 501,
        Unavailable => 503,
        Unknown | Internal | DataLoss => 500,
    }
}

/// Bytes in, bytes out: the messages are encoded and decoded by their descriptors.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> std::result::Result<(), tonic::Status> {
        prost::bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> std::result::Result<Option<Vec<u8>>, tonic::Status> {
        use prost::bytes::Buf;
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

/// This client's TLS for tonic: the CAs it trusts and its certificate.
pub(crate) fn tls_config(tls: &Tls) -> tonic::transport::ClientTlsConfig {
    tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&tls.ca_pem))
        .identity(tonic::transport::Identity::from_pem(
            &tls.cert_pem,
            &tls.key_pem,
        ))
}

/// Puts etcd's auth `token` on a request (its `token` metadata); None when the token is not
/// ASCII, which metadata cannot carry.
pub(crate) fn set_token<T>(req: &mut tonic::Request<T>, token: &str) -> Option<()> {
    req.metadata_mut().insert("token", token.parse().ok()?);
    Some(())
}

/// An error with its causes, as one line.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(name: &str, v: Value) -> Value {
        let m = DynamicMessage::deserialize(descriptor(name).unwrap(), v).unwrap();
        let bytes = prost::Message::encode_to_vec(&m);
        let back = DynamicMessage::decode(descriptor(name).unwrap(), bytes.as_slice()).unwrap();
        let opts = SerializeOptions::new()
            .use_proto_field_name(true)
            .skip_default_fields(true);
        back.serialize_with_options(serde_json::value::Serializer, &opts)
            .unwrap()
    }

    #[test]
    fn every_gateway_path_has_its_messages() {
        for p in [
            "/v3/kv/range",
            "/v3/kv/put",
            "/v3/kv/deleterange",
            "/v3/kv/txn",
            "/v3/kv/compaction",
            "/v3/lease/grant",
            "/v3/lease/revoke",
            "/v3/cluster/member/add",
            "/v3/cluster/member/remove",
            "/v3/cluster/member/update",
            "/v3/cluster/member/list",
            "/v3/cluster/member/promote",
            "/v3/maintenance/alarm",
            "/v3/maintenance/status",
            "/v3/maintenance/defragment",
            "/v3/maintenance/transfer-leadership",
            "/v3/auth/enable",
            "/v3/auth/authenticate",
            "/v3/auth/user/add",
            "/v3/auth/user/get",
            "/v3/auth/user/list",
            "/v3/auth/user/delete",
            "/v3/auth/user/grant",
            "/v3/auth/role/add",
            "/v3/auth/role/get",
            "/v3/auth/role/list",
            "/v3/auth/role/delete",
            "/v3/auth/role/grant",
        ] {
            let (m, i, o) = method(p).unwrap();
            assert!(m.starts_with("/etcdserverpb."), "{p}");
            descriptor(i).unwrap();
            descriptor(o).unwrap();
        }
        assert!(method("/v3/watch").is_none());
    }

    /// The gateway's JSON as the charm writes it (a member lock's transaction, a count at a
    /// revision, an alarm) survives the protobuf encoding field for field.
    #[test]
    fn the_gateways_json_maps_to_protobuf_and_back() {
        let txn = json!({
            "compare": [{"key": "Zm9v", "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            "success": [{"request_put": {"key": "Zm9v", "value": "YmFy", "lease": "7"}}],
            "failure": [{"request_range": {"key": "Zm9v"}}]
        });
        let back = round_trip("TxnRequest", txn);
        assert_eq!(back["success"][0]["request_put"]["lease"], json!("7"));
        assert_eq!(back["compare"][0]["target"], json!("CREATE"));
        // the default (EQUAL, 0) is left out, as the gateway leaves it out
        assert!(back["compare"][0].get("result").is_none());
        let range = round_trip(
            "RangeRequest",
            json!({"key": "AA==", "range_end": "AA==", "count_only": true, "revision": "12", "limit": "1"}),
        );
        assert_eq!(range["revision"], json!("12"));
        assert_eq!(range["key"], json!("AA=="));
        let alarm = round_trip(
            "AlarmRequest",
            json!({"action": "DEACTIVATE", "memberID": "18446744073709551615", "alarm": "NOSPACE"}),
        );
        assert_eq!(alarm["memberID"], json!("18446744073709551615"));
        assert_eq!(alarm["alarm"], json!("NOSPACE"));
        let perm = round_trip(
            "AuthRoleGrantPermissionRequest",
            json!({"name": "r", "perm": {"permType": "READWRITE", "key": "L2E=", "range_end": "L2I="}}),
        );
        assert_eq!(perm["perm"]["permType"], json!("READWRITE"));
    }

    #[test]
    fn a_request_the_api_does_not_know_is_an_error_not_a_panic() {
        let r = DynamicMessage::deserialize(
            descriptor("RangeRequest").unwrap(),
            json!({"key": 5, "nonsense": true}),
        );
        assert!(r.is_err());
    }

    #[test]
    fn credentials_never_show_the_password() {
        let c = Credentials {
            user: "root".into(),
            password: "s3cret".into(),
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
