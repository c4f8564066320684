//! The etcd charm's `certificates` relation in both protocols it speaks. Legacy, with easyrsa
//! (the charm): the classic runbook's first lines (deploy easyrsa, deploy etcd, relate, add
//! units), any requirer served and refused where its request names addresses that are not its
//! own, and the move from one CA to the other and back while a writer keeps writing.
//! tls-certificates v4, with a provider built on the published library (tests/charms/
//! tls-v4-probe): certificates issued for the units' requests, the provider's CA changed under
//! a writer, a refused request, extra SANs.

mod support;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::etcd::{self, Creds, Writer, MIN};
use support::*;

/// A certificate as `openssl x509 -text` shows it on the host.
fn cert_text(cert: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cert.pem");
    std::fs::write(&p, cert).unwrap();
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Does the certificate carry `addr` as an IP SAN?
fn names_address(cert: &str, addr: &str) -> bool {
    cert_text(cert).contains(&format!("IP Address:{addr}"))
}

/// Does the certificate carry `name` as a DNS SAN?
fn names_dns(cert: &str, name: &str) -> bool {
    cert_text(cert).contains(&format!("DNS:{name}"))
}

fn cat(env: &Env, unit: &str, path: &str) -> String {
    env.exec_ok(unit, &format!("cat {path}"))
}

/// Certificates in a PEM text.
fn count_certs(pem: &str) -> usize {
    pem.matches("-----BEGIN CERTIFICATE-----").count()
}

/// Client credentials for the host: the CA bundle given, a client pair read from a unit.
fn creds_with(env: &Env, unit: &str, dir: &str, ca: &str) -> Creds {
    let creds = Creds {
        dir: tempfile::tempdir().unwrap(),
    };
    fill_creds(env, &creds, unit, dir, ca);
    creds
}

/// Writes (again) into `creds` the CA bundle given and a client pair read from a unit.
fn fill_creds(env: &Env, creds: &Creds, unit: &str, dir: &str, ca: &str) {
    std::fs::write(creds.path("ca.crt"), ca).unwrap();
    for f in ["client.crt", "client.key"] {
        std::fs::write(creds.path(f), cat(env, unit, &format!("{dir}/{f}"))).unwrap();
    }
}

/// Every etcd unit serves with a certificate from `ca` and trusts `ca` alone on the client
/// port, every member restarted since (its etcd PID changed) and no unit reports a CA move.
/// The peer port stays on the charm's peer CA whatever the client port's CA (H5).
fn all_on(env: &Env, ca: &str) -> bool {
    let units = env.units("etcd");
    units.iter().all(|u| {
        let server = cat(env, u, "/etc/etcd/pki/server.crt");
        let trusted = cat(env, u, "/etc/etcd/pki/ca.crt");
        let peer_ca = cat(env, u, "/etc/etcd/pki/peer-ca.crt");
        openssl_verifies(ca, &server)
            && count_certs(&trusted) == 1
            && trusted.trim() == ca.trim()
            && count_certs(&peer_ca) == 1
            && peer_ca.trim() != ca.trim()
            && openssl_verifies(&peer_ca, &cat(env, u, "/etc/etcd/pki/peer.crt"))
    }) && units.iter().all(|u| {
        let s = env.status();
        let msg = s["applications"]["etcd"]["units"][u.as_str()]["workload-status"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string();
        msg.starts_with(&format!("Healthy with {} known peers", units.len()))
    })
}

/// easyrsa serves any requirer, not only etcd: a probe charm gets a certificate for its
/// own address (key 0600), and is refused one for an address that is not its own or for a
/// malformed `sans`, keeping what it had. (The runbook's first lines, with etcd, are in
/// tests/runbook.rs.)
#[test]
fn easyrsa_serves_any_requirer_and_refuses_names_it_does_not_own_or_malformed_requests() {
    let env = Env::new("easyrsa-probe", &[]);
    env.ok(&["deploy", "easyrsa"]);
    env.ok(&["deploy", "tls-probe"]);
    env.ok(&["integrate", "tls-probe", "easyrsa"]);
    env.wait_units("tls-probe", 1, "active", "certificate for", 2 * MIN);
    let ca = cat(&env, "easyrsa/0", "/var/lib/easyrsa/pki/ca.crt");
    let probe_addr = env.address("tls-probe/0");
    let probe_cert = cat(&env, "tls-probe/0", "/var/lib/tls-probe/server.crt");
    assert!(openssl_verifies(&ca, &probe_cert));
    assert!(
        names_address(&probe_cert, &probe_addr),
        "the probe's certificate does not name {probe_addr}"
    );
    let mode = env.exec_ok("tls-probe/0", "stat -c %a /var/lib/tls-probe/server.key");
    assert_eq!(mode.trim(), "600");
    let easyrsa_message = || {
        let s = env.status();
        s["applications"]["easyrsa"]["units"]["easyrsa/0"]["workload-status"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    // A name that is not the unit's own.
    env.ok(&["config", "tls-probe", "extra-san=10.99.0.1"]);
    until("easyrsa's refusal", 2 * MIN, || {
        cat(&env, "tls-probe/0", "/var/lib/tls-probe/refused")
            .contains("10.99.0.1 is not an address")
    });
    let msg = easyrsa_message();
    assert!(
        msg.contains("refused tls-probe/0") && msg.contains("10.99.0.1"),
        "{msg}"
    );
    // A malformed relation value: `sans` that is not a JSON list.
    env.ok(&[
        "config",
        "tls-probe",
        "extra-san=",
        "raw-sans=10.0.0.1,oops",
    ]);
    until("easyrsa's refusal of the malformed sans", 2 * MIN, || {
        cat(&env, "tls-probe/0", "/var/lib/tls-probe/refused").contains("sans is not a JSON list")
    });
    let msg = easyrsa_message();
    assert!(
        msg.contains("refused tls-probe/0") && msg.contains("sans is not a JSON list"),
        "{msg}"
    );
    assert_eq!(
        cat(&env, "tls-probe/0", "/var/lib/tls-probe/server.crt"),
        probe_cert,
        "a refused request replaced the certificate the probe had"
    );
    // A good request again is answered again.
    env.ok(&["config", "tls-probe", "raw-sans="]);
    until("the refusal cleared", 2 * MIN, || {
        cat(&env, "tls-probe/0", "/var/lib/tls-probe/refused").is_empty()
    });
}

#[test]
fn the_ca_moves_to_easyrsa_and_back_while_a_writer_keeps_writing() {
    let env = Env::new("easyrsa-move", &[]);
    let here = tempfile::tempdir().unwrap();
    deploy_healthy(&env, 3, &etcd_tarball(here.path(), &etcd35(), "3.5.1"), &[]);
    env.ok(&["deploy", "easyrsa"]);
    env.wait_units(
        "easyrsa",
        1,
        "active",
        "Certificate Authority ready",
        2 * MIN,
    );
    let built_in = cat(&env, "etcd/0", "/etc/etcd/pki/ca.crt");
    let easyrsa = cat(&env, "easyrsa/0", "/var/lib/easyrsa/pki/ca.crt");
    assert_eq!(count_certs(&built_in), 1);
    // A client that gets new credentials during the move (as `db` clients do): it trusts
    // both CAs and holds both client certificates.
    let both = format!("{}\n{}\n", built_in.trim(), easyrsa.trim());
    let old = creds_with(&env, "etcd/0", "/etc/etcd/pki", &both);
    let new = creds_with(&env, "easyrsa/0", "/var/lib/easyrsa/pki", &both);
    let eps = Arc::new(Mutex::new(etcd::endpoints(&env)));
    let writer = Writer::start_any(
        vec![old.dir.path().to_path_buf(), new.dir.path().to_path_buf()],
        eps.clone(),
        "/ca-move/",
    );
    writer.wait_for_writes(20, "before the move");
    let pids = pids(&env);

    env.ok(&["integrate", "etcd", "easyrsa"]);
    until("every unit on easyrsa's CA", 5 * MIN, || {
        all_on(&env, &easyrsa)
    });
    for (b, a) in pids.iter().zip(&self::pids(&env)) {
        assert_ne!(b, a, "a member never restarted to trust the new CA");
    }
    writer.wait_for_writes(20, "after the move to easyrsa");
    // Only easyrsa's credentials work now: the built-in CA's client certificate is refused.
    let only_old = creds_with(&env, "etcd/0", "/etc/etcd/pki", &easyrsa);
    std::fs::copy(old.path("client.crt"), only_old.path("client.crt")).unwrap();
    std::fs::copy(old.path("client.key"), only_old.path("client.key")).unwrap();
    let out = only_old.etcdctl(&etcd::endpoints(&env), true, &["get", "x"]);
    assert!(
        !out.status.success(),
        "the dropped CA's client certificate is still accepted"
    );

    env.ok(&["remove-relation", "etcd", "easyrsa"]);
    until("every unit back on the built-in CA", 5 * MIN, || {
        all_on(&env, &built_in)
    });
    writer.wait_for_writes(20, "after the move back");
    let check = creds_with(&env, "etcd/0", "/etc/etcd/pki", &built_in);
    let tally =
        etcd::no_acknowledged_write_lost(&check, &etcd::endpoints(&env), writer, "CA moves");
    let gap = tally.longest_gap;
    println!(
        "CA moves: {} writes acknowledged, longest time without an acknowledged write {:.1} s",
        tally.acked,
        gap.as_secs_f64()
    );
    etcd::members_agree(&env, &check, "after two CA moves");
    assert!(
        gap < Duration::from_secs(6),
        "writes were refused for {gap:?} during a CA move"
    );
}

/// The runbook's first lines typed after etcd already runs alone: its move to easyrsa's CA
/// (both trusted, new certificates, the old CA dropped) and back finishes in the hooks the
/// relation itself fires. No update-status comes to finish it (the interval is an hour): a
/// lone leader plans each next step after its own restart.
#[test]
fn a_lone_running_unit_moves_to_easyrsa_and_back_without_waiting_for_update_status() {
    let env = Env::new("easyrsa-lone", &["update-status-hook-interval=1h"]);
    let here = tempfile::tempdir().unwrap();
    deploy_healthy(&env, 1, &etcd_tarball(here.path(), &etcd35(), "3.5.1"), &[]);
    let built_in = cat(&env, "etcd/0", "/etc/etcd/pki/ca.crt");
    env.ok(&["deploy", "easyrsa"]);
    env.ok(&["integrate", "etcd", "easyrsa"]);
    env.wait_units("easyrsa", 1, "active", "Certificate Authority", 2 * MIN);
    let easyrsa = cat(&env, "easyrsa/0", "/var/lib/easyrsa/pki/ca.crt");
    until("etcd/0 on easyrsa's CA alone", 3 * MIN, || {
        all_on(&env, &easyrsa)
    });
    env.ok(&["remove-relation", "etcd", "easyrsa"]);
    until("etcd/0 back on the built-in CA alone", 3 * MIN, || {
        all_on(&env, &built_in)
    });
    let creds = creds_with(&env, "etcd/0", "/etc/etcd/pki", &built_in);
    let out = creds.etcdctl(&etcd::endpoints(&env), true, &["put", "lone", "ok"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The etcd PIDs of every unit, in unit order.
fn pids(env: &Env) -> Vec<String> {
    env.units("etcd")
        .iter()
        .map(|u| etcd::etcd_pid(env, u))
        .collect()
}

/// tls-certificates v4 end to end with a provider on the published library: the units ask
/// with CSRs (no key on the relation), the cluster moves onto the provider's CA, the
/// provider changes its CA as self-signed-certificates does (everything revoked first: the
/// units keep serving and say so; then the same requests answered from the new CA: the
/// three-step move) under a writer that loses no acknowledged write, a refused request
/// blocks with the provider's reason and changes nothing, and new extra SANs are issued
/// without restarting any member.
#[test]
fn a_v4_provider_issues_and_changes_its_ca_under_a_writer() {
    let env = Env::new("tls-v4", &[]);
    let here = tempfile::tempdir().unwrap();
    deploy_healthy(
        &env,
        3,
        &etcd_tarball(here.path(), &etcd35(), "3.5.1"),
        &[
            "--config",
            "certificate_extra_sans=etcd.example.internal,{unit}.etcd.internal",
        ],
    );
    env.ok(&["deploy", "tls-v4-probe"]);
    env.wait_units("tls-v4-probe", 1, "active", "CA 1", 2 * MIN);
    let probe_ca = || cat(&env, "tls-v4-probe/0", "/var/lib/tls-v4-probe/ca.crt");
    let ca1 = probe_ca();
    env.ok(&["integrate", "etcd", "tls-v4-probe"]);
    until("every unit on the v4 provider's CA", 5 * MIN, || {
        all_on(&env, &ca1)
    });
    for u in env.units("etcd") {
        let server = cat(&env, &u, "/etc/etcd/pki/server.crt");
        let label = u.replace('/', "-");
        assert!(names_dns(&server, "etcd.example.internal"), "{u}: {server}");
        assert!(names_dns(&server, &format!("{label}.etcd.internal")), "{u}");
        assert!(names_address(&server, &env.address(&u)), "{u}");
        assert!(openssl_verifies(
            &ca1,
            &cat(&env, &u, "/etc/etcd/pki/client.crt")
        ));
    }
    // No private key crossed the relation: every databag the provider reads is keyless.
    let seen = env.exec_ok(
        "tls-v4-probe/0",
        "r=$(relation-ids certificates); for u in $(relation-list -r $r); do relation-get -r $r - $u; done; relation-get -r $r --app - etcd",
    );
    assert!(seen.contains("CERTIFICATE REQUEST"), "{seen}");
    assert!(
        !seen.contains("PRIVATE KEY"),
        "a private key on the relation: {seen}"
    );
    assert_no_key_material_in_logs(&env);

    // The provider's CA changes under a writer.
    let pki = "/etc/etcd/pki";
    let old = creds_with(&env, "etcd/0", pki, &ca1);
    let new = Creds {
        dir: tempfile::tempdir().unwrap(),
    };
    let eps = Arc::new(Mutex::new(etcd::endpoints(&env)));
    let writer = Writer::start_any(
        vec![old.dir.path().to_path_buf(), new.dir.path().to_path_buf()],
        eps.clone(),
        "/v4-rotation/",
    );
    writer.wait_for_writes(20, "before the CA change");
    let before = pids(&env);
    let (code, task) = env.run_action("tls-v4-probe/0", &["rotate-ca"]);
    assert_eq!(code, 0, "{task}");
    let ca2 = probe_ca();
    assert_ne!(ca1, ca2);
    let both = format!("{}\n{}\n", ca1.trim(), ca2.trim());
    std::fs::write(old.path("ca.crt"), &both).unwrap();
    until(
        "every unit saying its certificate was revoked",
        3 * MIN,
        || {
            let s = env.status();
            env.units("etcd")
                .iter()
                .all(|u| unit_message(&s, u).contains("revoked this unit's certificate"))
        },
    );
    // Revoked, not issued anew yet: the units serve on (nothing restarted, writes go on).
    writer.wait_for_writes(20, "while the certificates are revoked");
    assert_eq!(
        pids(&env),
        before,
        "a member restarted on a revocation alone"
    );
    let (code, task) = env.run_action("tls-v4-probe/0", &["issue"]);
    assert_eq!(code, 0, "{task}");
    until("every unit on the provider's new CA", 6 * MIN, || {
        // The client certificate from the new CA, as `db` clients get it, once issued.
        let c = cat(&env, "etcd/0", "/etc/etcd/pki/client.crt");
        if openssl_verifies(&ca2, &c) && !new.path("client.key").exists() {
            fill_creds(&env, &new, "etcd/0", pki, &both);
        }
        all_on(&env, &ca2)
    });
    for (b, a) in before.iter().zip(&pids(&env)) {
        assert_ne!(b, a, "a member never restarted to trust the new CA");
    }
    let check = creds_with(&env, "etcd/0", pki, &ca2);
    let tally =
        etcd::no_acknowledged_write_lost(&check, &etcd::endpoints(&env), writer, "v4 CA change");
    println!(
        "v4 CA change: {} writes acknowledged, longest time without an acknowledged write {:.1} s",
        tally.acked,
        tally.longest_gap.as_secs_f64()
    );
    etcd::members_agree(&env, &check, "after the v4 CA change");
    assert!(
        tally.longest_gap < Duration::from_secs(6),
        "writes were refused for {:?}",
        tally.longest_gap
    );

    // A classic `db` client is handed the provider's CA and the shared client certificate
    // it issued, and they work.
    env.ok(&["deploy", "etcd-client", "client"]);
    env.ok(&["integrate", "etcd:db", "client:db"]);
    env.wait("the db client's credentials", 3 * MIN, |_| {
        env.exec("client/0", "test -s /var/lib/etcd-client/client.key")
            .code
            == 0
    });
    let db = Creds::from_unit_dir(&env, "client/0", "/var/lib/etcd-client");
    let db_cert = std::fs::read_to_string(db.path("client.crt")).unwrap();
    assert!(
        openssl_verifies(&ca2, &db_cert),
        "the db client's certificate is not the provider's"
    );
    let out = db.etcdctl(&etcd::endpoints(&env), true, &["put", "/db/v4", "ok"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The provider's answers gone for a while: nothing moves (no move back to the built-in
    // CA, no restart), and the answers back change nothing either.
    let before = pids(&env);
    let (code, task) = env.run_action("tls-v4-probe/0", &["forget"]);
    assert_eq!(code, 0, "{task}");
    env.settle("3m");
    assert!(
        all_on(&env, &ca2),
        "the cluster left the provider's CA when it fell silent"
    );
    assert_eq!(
        pids(&env),
        before,
        "a member restarted when the provider fell silent"
    );
    let (code, task) = env.run_action("tls-v4-probe/0", &["issue"]);
    assert_eq!(code, 0, "{task}");
    env.settle("3m");
    assert!(all_on(&env, &ca2));
    assert_eq!(
        pids(&env),
        before,
        "a member restarted for certificates of the same CA"
    );

    // A refused request: the unit says why and keeps what it serves with.
    let served = cat(&env, "etcd/1", "/etc/etcd/pki/server.crt");
    let before = pids(&env);
    env.ok(&["config", "tls-v4-probe", "refuse-ip-sans=true"]);
    env.ok(&[
        "config",
        "etcd",
        "certificate_extra_sans=etcd.example.internal,lb.etcd.internal",
    ]);
    until(
        "the provider's refusal in the units' status",
        3 * MIN,
        || {
            let s = env.status();
            env.units("etcd").iter().all(|u| {
                unit_message(&s, u).contains(
                    "tls-v4-probe refused this unit's certificate request: IP_NOT_ALLOWED",
                )
            })
        },
    );
    assert_eq!(cat(&env, "etcd/1", "/etc/etcd/pki/server.crt"), served);
    // Answered: the new name is served, and no member restarted for it.
    env.ok(&["config", "tls-v4-probe", "refuse-ip-sans=false"]);
    until("the new extra SAN served by every unit", 3 * MIN, || {
        env.units("etcd").iter().all(|u| {
            names_dns(
                &cat(&env, u, "/etc/etcd/pki/server.crt"),
                "lb.etcd.internal",
            )
        })
    });
    etcd::wait_healthy_status(&env, 3, "after the new extra SANs");
    assert_eq!(pids(&env), before, "a member restarted for new extra SANs");
}

/// Renewal with a v4 provider: certificates that live two minutes are renewed before they
/// expire (a unit sends a new request over the same key once a third of the lifetime is
/// left; the leader does so for the shared client certificate), and taken without a restart.
#[test]
fn v4_certificates_are_renewed_before_they_expire_without_a_restart() {
    let env = Env::new("tls-v4-renew", &["update-status-hook-interval=10s"]);
    let here = tempfile::tempdir().unwrap();
    deploy_healthy(&env, 1, &etcd_tarball(here.path(), &etcd35(), "3.5.1"), &[]);
    env.ok(&["deploy", "tls-v4-probe", "--config", "validity-minutes=2"]);
    env.wait_units("tls-v4-probe", 1, "active", "CA 1", 2 * MIN);
    let ca = cat(&env, "tls-v4-probe/0", "/var/lib/tls-v4-probe/ca.crt");
    env.ok(&["integrate", "etcd", "tls-v4-probe"]);
    until("the unit on the v4 provider's CA", 3 * MIN, || {
        all_on(&env, &ca)
    });
    let pki = |f: &str| cat(&env, "etcd/0", &format!("/etc/etcd/pki/{f}"));
    let (server, client, key) = (pki("server.crt"), pki("client.crt"), pki("server.key"));
    let pid = etcd::etcd_pid(&env, "etcd/0");
    until("both certificates renewed", 3 * MIN, || {
        let (s, c) = (pki("server.crt"), pki("client.crt"));
        s != server && c != client && openssl_verifies(&ca, &s) && openssl_verifies(&ca, &c)
    });
    assert_eq!(
        pki("server.key"),
        key,
        "a renewal is a new request over the same key"
    );
    assert_eq!(
        etcd::etcd_pid(&env, "etcd/0"),
        pid,
        "etcd restarted for a renewal"
    );
    let check = creds_with(&env, "etcd/0", "/etc/etcd/pki", &ca);
    let out = check.etcdctl(&etcd::endpoints(&env), true, &["put", "renewed", "yes"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    etcd::wait_healthy_status(&env, 1, "after the renewals");
}

/// etcd's own start time of each member (`process_start_time_seconds` on /metrics): a
/// restart changes it even if a PID came back the same.
fn start_times(env: &Env, creds: &Creds) -> Vec<String> {
    env.units("etcd")
        .iter()
        .map(|u| {
            let out = creds
                .curl()
                .arg(format!("{}/metrics", etcd::unit_endpoint(env, u)))
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.lines()
                .find(|l| l.starts_with("process_start_time_seconds "))
                .unwrap_or_else(|| panic!("{u}: no process_start_time_seconds in {text}"))
                .to_string()
        })
        .collect()
}

/// Where the etcd_client/v0 requirer probe keeps its certificate, key and the CA etcd gave it.
const PROBE: &str = "/var/lib/etcd-client-probe";

/// etcdctl (3.5.1) with `creds` for at most `secs` seconds (a watch does not end by itself):
/// its stdout and stderr together.
fn etcdctl_for(creds: &Creds, eps: &str, secs: u32, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg(secs.to_string())
        .arg(etcd35().join("etcdctl"))
        .arg(format!("--endpoints={eps}"))
        .arg(format!("--cacert={}", creds.path("ca.crt").display()))
        .arg(format!("--cert={}", creds.path("client.crt").display()))
        .arg(format!("--key={}", creds.path("client.key").display()))
        .args(args)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `etcd-client` (etcd_client/v0) with two requirers built on ops and the published
/// tls-certificates library, their certificates from the same v4 provider as etcd's: refused
/// on an etcd with the known access-control leak until the operator opts in; then each
/// client reads, writes and watches under its own prefix only, the shared `db` client
/// certificate keeps full access with authentication on (a `db` client related meanwhile writes
/// with it over gRPC; etcd's JSON gateway refuses it), a client removed loses its user
/// and role — all under a writer that loses no acknowledged write, and no member restarted
/// for any of it (etcd's own process start times and PIDs unchanged).
#[test]
fn etcd_client_users_are_confined_to_their_prefixes_and_no_member_restarts() {
    let env = Env::new("etcd-client", &[]);
    let here = tempfile::tempdir().unwrap();
    deploy_healthy(&env, 3, &etcd_tarball(here.path(), &etcd35(), "3.5.1"), &[]);
    env.ok(&["deploy", "tls-v4-probe"]);
    env.wait_units("tls-v4-probe", 1, "active", "CA 1", 2 * MIN);
    let ca = cat(&env, "tls-v4-probe/0", "/var/lib/tls-v4-probe/ca.crt");
    env.ok(&["integrate", "etcd", "tls-v4-probe"]);
    until("every unit on the v4 provider's CA", 5 * MIN, || {
        all_on(&env, &ca)
    });
    for (app, prefix) in [("client-a", "/a/"), ("client-b", "/b/")] {
        env.ok(&[
            "deploy",
            "etcd-client-probe",
            app,
            "--config",
            &format!("prefix={prefix}"),
        ]);
        env.ok(&[
            "integrate",
            &format!("{app}:certificates"),
            "tls-v4-probe:certificates",
        ]);
    }
    for app in ["client-a", "client-b"] {
        env.wait_units(app, 1, "active", "certificate, no etcd", 3 * MIN);
    }
    // the shared db client certificate (what `db` and package-client-credentials give)
    let root = creds_with(&env, "etcd/0", "/etc/etcd/pki", &ca);
    let eps = Arc::new(Mutex::new(etcd::endpoints(&env)));
    let all = etcd::endpoints(&env);
    let writer = Writer::start_failing_over(root.dir.path().to_path_buf(), eps, "/writer/");
    writer.wait_for_writes(10, "before any etcd-client");
    let (pids0, starts0) = (pids(&env), start_times(&env, &root));

    // Refused on etcd 3.5.1 (GHSA-xg4h-6gfc-h4m8) until the operator opts in.
    env.ok(&["integrate", "etcd", "client-a"]);
    until("the leader refuses client-a on etcd 3.5.1", 3 * MIN, || {
        let s = env.status();
        env.units("etcd").iter().any(|u| {
            let m = s["applications"]["etcd"]["units"][u.as_str()]["workload-status"]["message"]
                .as_str()
                .unwrap_or("")
                .to_string();
            m.contains("etcd-client client-a: refused") && m.contains("GHSA-xg4h-6gfc-h4m8")
        })
    });
    let users = etcdctl_for(&root, &all, 10, &["user", "list"]);
    assert!(
        !users.contains("client-a"),
        "a refused client got a user: {users}"
    );
    env.ok(&["config", "etcd", "etcd_client_allow_vulnerable_etcd=true"]);
    env.wait_units("client-a", 1, "active", "served as client-a", 3 * MIN);
    env.ok(&["integrate", "etcd", "client-b"]);
    env.wait_units("client-b", 1, "active", "served as client-b", 3 * MIN);
    let answer = cat(&env, "client-a/0", &format!("{PROBE}/answer.json"));
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["version"], "3.5.1", "{answer}");
    for u in env.units("etcd") {
        let ep = etcd::unit_endpoint(&env, &u);
        assert!(
            answer["endpoints"].as_str().unwrap().contains(&ep),
            "{answer}: {ep}"
        );
    }
    assert!(
        answer["tls-ca"].as_str().unwrap().trim() == ca.trim(),
        "{answer}"
    );

    let a = Creds::from_unit_dir(&env, "client-a/0", PROBE);
    let b = Creds::from_unit_dir(&env, "client-b/0", PROBE);
    for (c, mine, theirs) in [(&a, "/a/", "/b/"), (&b, "/b/", "/a/")] {
        let put = etcdctl_for(c, &all, 10, &["put", &format!("{mine}k"), "v"]);
        assert!(put.contains("OK"), "{mine}: {put}");
        let got = etcdctl_for(c, &all, 10, &["get", "--prefix", mine]);
        assert!(got.contains(&format!("{mine}k")), "{mine}: {got}");
        let watched = etcdctl_for(c, &all, 5, &["watch", "--prefix", "--rev=1", mine]);
        assert!(
            watched.contains(&format!("{mine}k")),
            "{mine} watch: {watched}"
        );
        for args in [
            vec!["get".to_string(), "--prefix".into(), theirs.into()],
            vec!["put".to_string(), format!("{theirs}x"), "v".into()],
            vec!["get".to_string(), "/writer/000001".into()],
            vec![
                "watch".to_string(),
                "--prefix".into(),
                "--rev=1".into(),
                theirs.into(),
            ],
            vec!["user".to_string(), "list".into()],
        ] {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = etcdctl_for(c, &all, 5, &a);
            assert!(out.contains("permission denied"), "{mine} {args:?}: {out}");
        }
    }
    // The shared client certificate keeps the root role: it reads what every client wrote.
    let everything = etcdctl_for(&root, &all, 10, &["get", "--prefix", "/", "--keys-only"]);
    assert!(
        everything.contains("/a/k") && everything.contains("/b/k"),
        "{everything}"
    );
    // A classic `db` client related with authentication on gets credentials that read and
    // write over gRPC (kube-apiserver's way); etcd's JSON gateway refuses them, as it refuses
    // every certificate with a Common Name while authentication is on (OPERATIONS says so).
    env.ok(&["deploy", "etcd-client", "dbclient"]);
    env.ok(&["integrate", "etcd:db", "dbclient:db"]);
    until(
        "dbclient given the db relation's credentials",
        3 * MIN,
        || {
            env.exec("dbclient/0", "test -s /var/lib/etcd-client/result")
                .code
                == 0
        },
    );
    let db = Creds::from_unit_dir(&env, "dbclient/0", "/var/lib/etcd-client");
    let put = etcdctl_for(&db, &all, 10, &["put", "/db/k", "v"]);
    assert!(
        put.contains("OK"),
        "the db relation's credentials over gRPC: {put}"
    );
    let got = etcdctl_for(&db, &all, 10, &["get", "/a/k"]);
    assert!(got.contains("/a/k"), "{got}");
    let gateway = cat(&env, "dbclient/0", "/var/lib/etcd-client/result");
    assert_eq!(
        gateway.trim(),
        "failed",
        "etcd's gateway took a certificate with a CN"
    );

    // client-b goes: its user and role with it; client-a is untouched.
    env.ok(&["remove-relation", "etcd", "client-b"]);
    until("client-b's user and role removed", 3 * MIN, || {
        let users = etcdctl_for(&root, &all, 10, &["user", "list"]);
        let roles = etcdctl_for(&root, &all, 10, &["role", "list"]);
        users.contains("root")
            && users.contains("client-a")
            && !users.contains("client-b")
            && roles
                .lines()
                .filter(|l| l.starts_with("etcd-client-"))
                .count()
                == 1
    });
    let denied = etcdctl_for(&b, &all, 10, &["get", "--prefix", "/b/"]);
    assert!(
        !denied.contains("/b/k"),
        "a removed client still reads: {denied}"
    );
    let still = etcdctl_for(&a, &all, 10, &["put", "/a/after", "v"]);
    assert!(still.contains("OK"), "{still}");

    let tally = etcd::no_acknowledged_write_lost(&root, &all, writer, "clients coming and going");
    assert!(
        tally.longest_gap < Duration::from_secs(6),
        "longest write gap {:?}",
        tally.longest_gap
    );
    assert_eq!(pids(&env), pids0, "a member restarted for a client");
    assert_eq!(
        start_times(&env, &root),
        starts0,
        "a member restarted for a client"
    );
}
