//! What the gateway client (`client`) and the gRPC one (`rpc`) share: the TLS credentials
//! and the errors, with callers telling them apart the same way whichever transport.

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd at {endpoint}: HTTP {status}: {message}")]
    Api {
        endpoint: String,
        status: u16,
        message: String,
    },
    #[error("etcd at {endpoint}: {source}")]
    Transport {
        endpoint: String,
        source: reqwest::Error,
    },
    #[error("etcd at {endpoint}: {detail}")]
    Unreachable { endpoint: String, detail: String },
    #[error("etcd TLS credentials: {0}")]
    Tls(String),
    #[error("etcd at {endpoint}: unexpected answer: {detail}")]
    Decode { endpoint: String, detail: String },
}

impl EtcdError {
    pub fn message_contains(&self, s: &str) -> bool {
        matches!(self, EtcdError::Api { message, .. } if message.contains(s))
    }
    pub fn status(&self) -> Option<u16> {
        match self {
            EtcdError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, EtcdError>;

#[derive(Clone)]
pub struct Tls {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl Tls {
    pub fn from_dir(dir: &str, cert: &str, key: &str) -> std::io::Result<Tls> {
        Ok(Tls {
            ca_pem: std::fs::read(format!("{dir}/ca.crt"))?,
            cert_pem: std::fs::read(format!("{dir}/{cert}"))?,
            key_pem: std::fs::read(format!("{dir}/{key}"))?,
        })
    }
}

/// The end of the range of keys that start with `prefix` (etcd's `GetPrefixRangeEnd`); an
/// all-0xff prefix (no end) and the empty prefix mean every key ("\0").
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
