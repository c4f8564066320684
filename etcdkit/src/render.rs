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
    /// a plain-http listener on 127.0.0.1 serving /metrics and /health only, for a metrics
    /// agent on the same machine (`listen-metrics-urls`); None: none
    pub metrics_port: Option<u16>,
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
            metrics_port: None,
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

/// An address as the host of a URL: an IPv6 literal in brackets (RFC 3986), once.
pub fn url_host(address: &str) -> std::borrow::Cow<'_, str> {
    if address.contains(':') && !address.starts_with('[') {
        format!("[{address}]").into()
    } else {
        address.into()
    }
}

/// The first line of every config the charm writes.
const HEADER: &str = "# Rendered by the etcd charm; changes are overwritten.\n";

/// etcd's config file, as etcd reads it (`--config-file`, etcd's `embed.Config` YAML
/// names). Serialized in this order.
#[derive(serde::Serialize)]
#[serde(rename_all = "kebab-case")]
struct File {
    name: String,
    data_dir: String,
    initial_cluster: String,
    initial_cluster_state: &'static str,
    initial_cluster_token: String,
    initial_advertise_peer_urls: String,
    listen_peer_urls: String,
    listen_client_urls: String,
    advertise_client_urls: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    listen_metrics_urls: Option<String>,
    heartbeat_interval: u32,
    election_timeout: u32,
    snapshot_count: u64,
    quota_backend_bytes: u64,
    auto_compaction_mode: String,
    auto_compaction_retention: String,
    strict_reconfig_check: bool,
    pre_vote: bool,
    /// 3.4 turns the HTTP/JSON gateway off when a config file is used (etcd-notes §0.1).
    enable_grpc_gateway: bool,
    /// 3.6 drops the v2 store
    #[serde(skip_serializing_if = "Option::is_none")]
    enable_v2: Option<bool>,
    logger: &'static str,
    log_level: &'static str,
    log_outputs: Vec<&'static str>,
    /// 3.7 drops it (it only counted v2 snapshots)
    #[serde(skip_serializing_if = "Option::is_none")]
    max_snapshots: Option<u32>,
    max_wals: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cipher_suites: Vec<String>,
    client_transport_security: Tls,
    peer_transport_security: Tls,
}

/// One port's TLS: certificate, key, and the bundle its peers' certificates must chain to.
#[derive(serde::Serialize)]
#[serde(rename_all = "kebab-case")]
struct Tls {
    cert_file: String,
    key_file: String,
    trusted_ca_file: String,
    client_cert_auth: bool,
    auto_tls: bool,
}

impl Tls {
    fn new(pki_dir: &str, cert: &str, key: &str, ca: &str) -> Tls {
        Tls {
            cert_file: format!("{pki_dir}/{cert}"),
            key_file: format!("{pki_dir}/{key}"),
            trusted_ca_file: format!("{pki_dir}/{ca}"),
            client_cert_auth: true,
            auto_tls: false,
        }
    }
}

/// The addresses a member listens on for clients: its own (or all) and loopback, and the
/// opt-in plain-http listener.
fn client_listen(listen_ip: &str, c: &Settings) -> String {
    let mut urls = vec![format!("https://{listen_ip}:{}", c.port)];
    if !c.bind_to_all_interfaces {
        urls.push(format!("https://127.0.0.1:{}", c.port));
    }
    if c.bind_with_insecure_http {
        // Opt-in only: an unauthenticated listener, bound to loopback.
        urls.push("http://127.0.0.1:4001".to_string());
    }
    urls.join(",")
}

/// etcd's config for this member. Each port trusts a bundle of its own: the peer port the
/// charm's peer CA, which signs members' peer certificates only, so no client certificate
/// is accepted there.
pub fn etcd_config(m: &Member, c: &Settings) -> String {
    let listen_ip = if c.bind_to_all_interfaces {
        "0.0.0.0".to_string()
    } else {
        url_host(&m.address).into_owned()
    };
    let v37 = Version {
        major: 3,
        minor: 7,
        patch: 0,
    };
    let file = File {
        name: m.name.clone(),
        data_dir: m.data_dir.clone(),
        initial_cluster: m.initial_cluster.clone(),
        initial_cluster_state: match m.state {
            ClusterState::New => "new",
            ClusterState::Existing => "existing",
        },
        initial_cluster_token: m.token.clone(),
        initial_advertise_peer_urls: format!("https://{}:{}", m.address, c.management_port),
        listen_peer_urls: format!("https://{listen_ip}:{}", c.management_port),
        listen_client_urls: client_listen(&listen_ip, c),
        advertise_client_urls: format!("https://{}:{}", m.address, c.port),
        listen_metrics_urls: c.metrics_port.map(|p| format!("http://127.0.0.1:{p}")),
        heartbeat_interval: c.heartbeat_interval,
        election_timeout: c.election_timeout,
        snapshot_count: c.snapshot_count,
        quota_backend_bytes: c.quota_backend_bytes,
        auto_compaction_mode: c.auto_compaction_mode.clone(),
        auto_compaction_retention: c.auto_compaction_retention.clone(),
        strict_reconfig_check: true,
        pre_vote: true,
        enable_grpc_gateway: true,
        enable_v2: m.version.has_v2_api().then_some(c.enable_v2),
        logger: "zap",
        log_level: "info",
        log_outputs: vec!["stderr"],
        max_snapshots: (m.version < v37).then_some(5),
        max_wals: 5,
        cipher_suites: c.tls_cipher_suites.clone(),
        client_transport_security: Tls::new(&m.pki_dir, "server.crt", "server.key", "ca.crt"),
        peer_transport_security: Tls::new(&m.pki_dir, "peer.crt", "peer.key", "peer-ca.crt"),
    };
    // A struct of strings, numbers and bools always serializes.
    HEADER.to_string() + &serde_yaml::to_string(&file).unwrap_or_default()
}

/// Whether two etcd configs say the same thing: equal as YAML values (the text may differ
/// in comments, quoting or order, as between charm revisions: no restart for that). Text
/// that does not parse is compared as text.
pub fn same_config(a: &str, b: &str) -> bool {
    let parse = |t: &str| serde_yaml::from_str::<serde_yaml::Value>(t).ok();
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// The same config with clients served on loopback only, and the endpoint to reach them
/// there: a member whose data is not proven yet (a restore's or a recover's, which a crash
/// would undo) must acknowledge no client's write, or the undo would discard it. None when
/// the config names no https client URL with a port. Pure.
pub fn clients_on_loopback(rendered: &str) -> Option<(String, String)> {
    let mut conf: serde_yaml::Mapping = serde_yaml::from_str(rendered).ok()?;
    let key = serde_yaml::Value::from("listen-client-urls");
    let urls = conf.get(&key)?.as_str()?;
    let port = urls
        .split(',')
        .next()?
        .strip_prefix("https://")
        .and_then(|hp| hp.rsplit_once(':'))
        .map(|(_, p)| p)
        .filter(|p| p.parse::<u16>().is_ok())?;
    let url = format!("https://127.0.0.1:{port}");
    conf.insert(key, serde_yaml::Value::from(url.clone()));
    let text = HEADER.to_string() + &serde_yaml::to_string(&conf).ok()?;
    Some((text, url))
}

/// How long etcd has to stop on SIGTERM before it is killed, under systemd
/// (`TimeoutStopSec`) and the built-in supervisor alike. etcd stops in well under a second,
/// except when a stream holds its gRPC server's graceful stop (etcd-io/etcd#8224: an
/// active watch through the gateway): then it would wait for systemd's default 90 s, past
/// `juju run`'s wait. A SIGKILL costs a member nothing it acknowledged: its WAL is synced
/// before it answers.
pub const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(15);

/// The systemd unit used where systemd is PID 1 (`Restart=on-failure`: a removed member
/// exits 0 and must stay down). No start rate limit: `StartLimitIntervalSec=0`, a `[Unit]`
/// setting (systemd.unit(5); in `[Service]` systemd ignores it), so a restore's two starts
/// and a roll's restart close together never leave etcd "start-limit-hit" and down.
/// `RequiresMountsFor` the data volume's mount point: when /etc/fstab names a volume there
/// that is missing at boot, etcd waits for it (and fails, to be started by the charm once
/// it mounted the volume) instead of starting on the empty directory under it; without
/// such a line it asks nothing more than the root filesystem.
pub fn systemd_unit(etcd_binary: &str, config_path: &str) -> String {
    format!(
        "# Rendered by the etcd charm.\n[Unit]\nDescription=etcd key-value store (etcd charm)\nAfter=network-online.target\nWants=network-online.target\nRequiresMountsFor={}\nStartLimitIntervalSec=0\n\n[Service]\nType=notify\nExecStart={etcd_binary} --config-file {config_path}\nRestart=on-failure\nRestartSec=2s\nTimeoutStartSec=infinity\nTimeoutStopSec={}s\nLimitNOFILE=65536\n\n[Install]\nWantedBy=multi-user.target\n",
        crate::VOLUME_MOUNT,
        STOP_GRACE.as_secs()
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

    /// The rate limit off in the section systemd reads it from: before, it stood in
    /// `[Service]`, was ignored, and the sixth start within 10 s left etcd down
    /// ("start-limit-hit") while a restore waited for it (bench.py restore1's third round).
    #[test]
    fn the_start_rate_limit_is_off_in_the_unit_section() {
        let unit = systemd_unit("/opt/etcd/current/etcd", "/etc/etcd/etcd.conf.yml");
        let mut section = "";
        let mut found = None;
        for line in unit.lines() {
            if line.starts_with('[') {
                section = line;
            } else if line.starts_with("StartLimitIntervalSec=") {
                found = Some((section, line));
            }
        }
        assert_eq!(found, Some(("[Unit]", "StartLimitIntervalSec=0")), "{unit}");
    }

    /// systemd itself reads the unit and finds nothing it would ignore (an unknown key, a
    /// key in the wrong section: what hid the start limit).
    #[test]
    fn systemd_reads_the_unit_without_a_warning() {
        let d = tempfile::tempdir().unwrap();
        let unit = d.path().join("etcd.service");
        std::fs::write(&unit, systemd_unit("/bin/true", "/etc/etcd/etcd.conf.yml")).unwrap();
        let complaints = hostkit::systemd::verify(&[&unit]).unwrap();
        assert!(complaints.is_empty(), "{complaints:?}");
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
                [format!("listen-client-urls: https://127.0.0.1:{}", c.port)]
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

    /// A config the charm of an earlier revision wrote (each string quoted, the list in
    /// flow style) says the same as this one's: a refresh restarts no member for it.
    #[test]
    fn the_same_settings_in_another_text_are_the_same_config() {
        let now = etcd_config(&member(ClusterState::New), &Settings::default());
        let before = now
            .replace("name: etcd0", "name: 'etcd0'")
            .replace("log-outputs:\n- stderr", "log-outputs: [stderr]");
        assert_ne!(now, before);
        assert!(same_config(&now, &before));
        assert!(!same_config(
            &now,
            &now.replace("max-wals: 5", "max-wals: 6")
        ));
        assert!(
            !same_config("name: [", "name: ["[..5].trim()),
            "unparsable: compared as text"
        );
    }

    /// A value that YAML would read as another type or structure stays the string it is.
    #[test]
    fn strings_that_look_like_yaml_stay_strings() {
        let mut m = member(ClusterState::New);
        m.token = "123".into();
        m.name = "a: b\nc: [d]".into();
        let c = Settings {
            auto_compaction_retention: "1".into(),
            ..Settings::default()
        };
        let v: serde_yaml::Value = serde_yaml::from_str(&etcd_config(&m, &c)).unwrap();
        assert_eq!(v["initial-cluster-token"], serde_yaml::Value::from("123"));
        assert_eq!(v["name"], serde_yaml::Value::from("a: b\nc: [d]"));
        assert_eq!(v["auto-compaction-retention"], serde_yaml::Value::from("1"));
    }
}
