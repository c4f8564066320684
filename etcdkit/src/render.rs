//! Renders etcd's YAML config file and the systemd unit. Pure functions: data in, bytes out.

use crate::version::Version;

/// What the operator chooses about a member's config (the charm builds it from its own
/// config): ports, timings, limits, compaction, ciphers and listeners.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub port: u16,
    pub management_port: u16,
    pub heartbeat_interval: u32,
    pub election_timeout: u32,
    pub snapshot_count: u64,
    pub quota_backend_bytes: u64,
    pub auto_compaction_mode: String,
    pub auto_compaction_retention: String,
    /// listen on 0.0.0.0 rather than the member's address and loopback
    pub bind_to_all_interfaces: bool,
    /// an unauthenticated listener on http://127.0.0.1:4001 besides the TLS ones
    pub bind_with_insecure_http: bool,
    /// serve the v2 API (3.4 and 3.5 only)
    pub enable_v2: bool,
    pub tls_cipher_suites: Vec<String>,
}

impl Default for Settings {
    /// etcd's and the charm's defaults.
    fn default() -> Settings {
        Settings {
            port: 2379,
            management_port: 2380,
            heartbeat_interval: 100,
            election_timeout: 1000,
            snapshot_count: 10000,
            quota_backend_bytes: 0,
            auto_compaction_mode: "periodic".into(),
            auto_compaction_retention: "1h".into(),
            bind_to_all_interfaces: false,
            bind_with_insecure_http: false,
            enable_v2: false,
            tls_cipher_suites: vec![],
        }
    }
}

/// Everything the etcd config depends on besides the operator's `Settings`.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    pub address: String,
    pub data_dir: String,
    pub initial_cluster: String,
    pub state: ClusterState,
    pub token: String,
    pub pki_dir: String,
    /// the etcd version that runs this config: flags follow it (3.6 drops the v2 store's
    /// `enable-v2`; 3.7 drops `max-snapshots`, which only counted v2 snapshots)
    pub version: Version,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

fn yaml_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// An address as the host of a URL: an IPv6 literal in brackets (RFC 3986), once.
pub fn url_host(address: &str) -> std::borrow::Cow<'_, str> {
    if address.contains(':') && !address.starts_with('[') {
        format!("[{address}]").into()
    } else {
        address.into()
    }
}

pub fn etcd_config(m: &Member, c: &Settings) -> String {
    let listen_ip = if c.bind_to_all_interfaces {
        "0.0.0.0".to_string()
    } else {
        url_host(&m.address).into_owned()
    };
    let mut client_listen = vec![format!("https://{listen_ip}:{}", c.port)];
    if !c.bind_to_all_interfaces {
        client_listen.push(format!("https://127.0.0.1:{}", c.port));
    }
    if c.bind_with_insecure_http {
        // Opt-in only: an unauthenticated listener, bound to loopback.
        client_listen.push("http://127.0.0.1:4001".to_string());
    }
    // Each port trusts a bundle of its own: the peer port the charm's peer CA, which signs
    // members' peer certificates only, so no client certificate is accepted there.
    let tls = |cert: &str, key: &str, ca: &str| {
        format!(
            "  cert-file: {}\n  key-file: {}\n  trusted-ca-file: {}\n  client-cert-auth: true\n  auto-tls: false\n",
            yaml_str(&format!("{}/{cert}", m.pki_dir)),
            yaml_str(&format!("{}/{key}", m.pki_dir)),
            yaml_str(&format!("{}/{ca}", m.pki_dir)),
        )
    };
    let mut s = String::new();
    s.push_str("# Rendered by the etcd charm; changes are overwritten.\n");
    s.push_str(&format!("name: {}\n", yaml_str(&m.name)));
    s.push_str(&format!("data-dir: {}\n", yaml_str(&m.data_dir)));
    s.push_str(&format!(
        "initial-cluster: {}\n",
        yaml_str(&m.initial_cluster)
    ));
    s.push_str(&format!(
        "initial-cluster-state: {}\n",
        match m.state {
            ClusterState::New => "new",
            ClusterState::Existing => "existing",
        }
    ));
    s.push_str(&format!("initial-cluster-token: {}\n", yaml_str(&m.token)));
    s.push_str(&format!(
        "initial-advertise-peer-urls: {}\n",
        yaml_str(&format!("https://{}:{}", m.address, c.management_port))
    ));
    s.push_str(&format!(
        "listen-peer-urls: {}\n",
        yaml_str(&format!("https://{listen_ip}:{}", c.management_port))
    ));
    s.push_str(&format!(
        "listen-client-urls: {}\n",
        yaml_str(&client_listen.join(","))
    ));
    s.push_str(&format!(
        "advertise-client-urls: {}\n",
        yaml_str(&format!("https://{}:{}", m.address, c.port))
    ));
    s.push_str(&format!("heartbeat-interval: {}\n", c.heartbeat_interval));
    s.push_str(&format!("election-timeout: {}\n", c.election_timeout));
    s.push_str(&format!("snapshot-count: {}\n", c.snapshot_count));
    s.push_str(&format!("quota-backend-bytes: {}\n", c.quota_backend_bytes));
    s.push_str(&format!(
        "auto-compaction-mode: {}\n",
        c.auto_compaction_mode
    ));
    s.push_str(&format!(
        "auto-compaction-retention: {}\n",
        yaml_str(&c.auto_compaction_retention)
    ));
    s.push_str("strict-reconfig-check: true\n");
    s.push_str("pre-vote: true\n");
    // 3.4 turns the HTTP/JSON gateway off when a config file is used (etcd-notes §0.1).
    s.push_str("enable-grpc-gateway: true\n");
    let v37 = Version {
        major: 3,
        minor: 7,
        patch: 0,
    };
    if m.version.has_v2_api() {
        s.push_str(&format!("enable-v2: {}\n", c.enable_v2));
    }
    s.push_str("logger: zap\n");
    s.push_str("log-level: info\n");
    s.push_str("log-outputs: [stderr]\n");
    if m.version < v37 {
        s.push_str("max-snapshots: 5\n");
    }
    s.push_str("max-wals: 5\n");
    if !c.tls_cipher_suites.is_empty() {
        s.push_str(&format!(
            "cipher-suites: [{}]\n",
            c.tls_cipher_suites.join(", ")
        ));
    }
    s.push_str("client-transport-security:\n");
    s.push_str(&tls("server.crt", "server.key", "ca.crt"));
    s.push_str("peer-transport-security:\n");
    s.push_str(&tls("peer.crt", "peer.key", "peer-ca.crt"));
    s
}

/// The same config with clients served on loopback only, and the endpoint to reach them
/// there: a member whose data is not proven yet (a restore's or a recover's, which a crash
/// would undo) must acknowledge no client's write, or the undo would discard it. None when
/// the config names no https client URL with a port. Pure.
pub fn clients_on_loopback(rendered: &str) -> Option<(String, String)> {
    let mut endpoint = None;
    let text: Vec<String> = rendered
        .lines()
        .map(|l| {
            let Some(urls) = l.strip_prefix("listen-client-urls:") else {
                return l.to_string();
            };
            let first = urls
                .trim()
                .trim_matches('\'')
                .split(',')
                .next()
                .unwrap_or("");
            let port = first
                .strip_prefix("https://")
                .and_then(|hp| hp.rsplit_once(':'))
                .map(|(_, p)| p)
                .filter(|p| p.parse::<u16>().is_ok());
            match port {
                Some(p) => {
                    let url = format!("https://127.0.0.1:{p}");
                    endpoint = Some(url.clone());
                    format!("listen-client-urls: {}", yaml_str(&url))
                }
                None => l.to_string(),
            }
        })
        .collect();
    endpoint.map(|ep| (text.join("\n") + "\n", ep))
}

/// The systemd unit used where systemd is PID 1 (`Restart=on-failure`: a removed member
/// exits 0 and must stay down).
pub fn systemd_unit(etcd_binary: &str, config_path: &str) -> String {
    format!(
        "# Rendered by the etcd charm.\n[Unit]\nDescription=etcd key-value store (etcd charm)\nAfter=network-online.target\nWants=network-online.target\n\n[Service]\nType=notify\nExecStart={etcd_binary} --config-file {config_path}\nRestart=on-failure\nRestartSec=2s\nStartLimitIntervalSec=0\nTimeoutStartSec=infinity\nLimitNOFILE=65536\n\n[Install]\nWantedBy=multi-user.target\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn golden(name: &str, actual: &str) {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/golden")
            .join(name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, actual).unwrap();
        }
        let want = std::fs::read_to_string(&p).unwrap_or_else(|_| {
            panic!(
                "missing golden file {} (run with UPDATE_GOLDEN=1)",
                p.display()
            )
        });
        assert_eq!(
            actual,
            want,
            "{} differs; rerun with UPDATE_GOLDEN=1 if the change is intended",
            p.display()
        );
    }

    fn member(state: ClusterState) -> Member {
        Member {
            name: "etcd0".into(),
            address: "10.213.1.10".into(),
            data_dir: "/var/lib/etcd".into(),
            initial_cluster: "etcd0=https://10.213.1.10:2380,etcd1=https://10.213.1.11:2380".into(),
            state,
            token: "tok-123".into(),
            pki_dir: "/etc/etcd/pki".into(),
            version: Version::parse("3.5.1").unwrap(),
        }
    }

    /// The defaults with the changes `v` names (`{"port": 12379}`).
    fn config(v: serde_json::Value) -> Settings {
        let mut c = Settings::default();
        for (k, v) in v.as_object().unwrap() {
            match k.as_str() {
                "port" => c.port = v.as_u64().unwrap() as u16,
                "management_port" => c.management_port = v.as_u64().unwrap() as u16,
                "heartbeat_interval" => c.heartbeat_interval = v.as_u64().unwrap() as u32,
                "election_timeout" => c.election_timeout = v.as_u64().unwrap() as u32,
                "bind_to_all_interfaces" => c.bind_to_all_interfaces = v.as_bool().unwrap(),
                "bind_with_insecure_http" => c.bind_with_insecure_http = v.as_bool().unwrap(),
                "enable_v2" => c.enable_v2 = v.as_bool().unwrap(),
                "tls_cipher_suites" => {
                    c.tls_cipher_suites = v.as_str().unwrap().split(',').map(String::from).collect()
                }
                other => panic!("no setting {other}"),
            }
        }
        c
    }

    #[test]
    fn default_config() {
        golden(
            "etcd-default.conf.yml",
            &etcd_config(&member(ClusterState::New), &config(serde_json::json!({}))),
        );
    }

    #[test]
    fn all_interfaces_insecure_http_and_ciphers() {
        let c = config(
            serde_json::json!({"bind_to_all_interfaces": true, "bind_with_insecure_http": true, "port": 12379, "management_port": 12380,
            "tls_cipher_suites": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "heartbeat_interval": 200, "election_timeout": 2000}),
        );
        golden(
            "etcd-all-interfaces.conf.yml",
            &etcd_config(&member(ClusterState::Existing), &c),
        );
    }

    #[test]
    fn rendered_config_is_yaml_with_the_gateway_on() {
        let s = etcd_config(&member(ClusterState::New), &config(serde_json::json!({})));
        let v: serde_yaml::Value = serde_yaml::from_str(&s).unwrap();
        assert_eq!(v["enable-grpc-gateway"], serde_yaml::Value::Bool(true));
        assert_eq!(
            v["client-transport-security"]["client-cert-auth"],
            serde_yaml::Value::Bool(true)
        );
        assert!(
            !s.contains("http://"),
            "no plaintext listener unless configured"
        );
    }

    #[test]
    fn each_minor_version_gets_the_flags_it_knows() {
        for v in ["3.4.23", "3.5.30", "3.6.0", "3.7.0"] {
            let mut m = member(ClusterState::New);
            m.version = Version::parse(v).unwrap();
            let minor = &v[..3];
            golden(
                &format!("etcd-{minor}.conf.yml"),
                &etcd_config(&m, &config(serde_json::json!({}))),
            );
        }
    }

    #[test]
    fn the_v2_api_is_served_only_when_asked_and_only_before_3_6() {
        let on = config(serde_json::json!({"enable_v2": true}));
        for (v, want) in [
            ("3.4.23", Some("enable-v2: true")),
            ("3.5.30", Some("enable-v2: true")),
            ("3.6.0", None),
        ] {
            let mut m = member(ClusterState::New);
            m.version = Version::parse(v).unwrap();
            let s = etcd_config(&m, &on);
            match want {
                Some(line) => assert!(s.lines().any(|l| l == line), "{v}: {s}"),
                None => assert!(!s.contains("enable-v2"), "{v}: {s}"),
            }
        }
        let off = etcd_config(&member(ClusterState::New), &config(serde_json::json!({})));
        assert!(off.lines().any(|l| l == "enable-v2: false"), "{off}");
    }

    #[test]
    fn systemd() {
        golden(
            "etcd.service",
            &systemd_unit("/opt/etcd/current/etcd", "/etc/etcd/etcd.conf.yml"),
        );
    }

    #[test]
    fn an_unproven_member_serves_clients_on_loopback_only() {
        for c in [
            config(serde_json::json!({})),
            config(
                serde_json::json!({"bind_to_all_interfaces": true, "bind_with_insecure_http": true, "port": 12379}),
            ),
        ] {
            let full = etcd_config(&member(ClusterState::New), &c);
            let (local, ep) = clients_on_loopback(&full).unwrap();
            assert_eq!(ep, format!("https://127.0.0.1:{}", c.port));
            let listen: Vec<&str> = local
                .lines()
                .filter(|l| l.starts_with("listen-client-urls"))
                .collect();
            assert_eq!(
                listen,
                [format!(
                    "listen-client-urls: 'https://127.0.0.1:{}'",
                    c.port
                )]
            );
            // Everything else (the peer port's listener too) is as rendered.
            let others = |t: &str| -> Vec<String> {
                t.lines()
                    .filter(|l| !l.starts_with("listen-client-urls"))
                    .map(String::from)
                    .collect()
            };
            assert_eq!(others(&full), others(&local));
        }
        assert!(clients_on_loopback("name: x\n").is_none());
    }
}
