//! Deliveries and client relations: archives (resource and URL, 3.5 and 3.4), the Debian
//! package, a tampered tarball, and a client charm on `db`.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;
use support::etcd::{endpoints, Creds};
use support::*;

const MIN: Duration = Duration::from_secs(60);

fn unit_msg(s: &serde_json::Value, app: &str) -> (String, String) {
    let u = &s["applications"][app]["units"][format!("{app}/0")]["workload-status"];
    (
        u["current"].as_str().unwrap_or("").to_string(),
        u["message"].as_str().unwrap_or("").to_string(),
    )
}

#[test]
fn archives_from_resource_and_url_the_debian_package_and_a_tampered_tarball() {
    let work = tempfile::tempdir().unwrap();
    let t34 = etcd_tarball(work.path(), &etcd34(), "3.4.23");
    let t35 = etcd_tarball(work.path(), &etcd35(), "3.5.1");
    let mut bytes = std::fs::read(&t35).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x40;
    let tampered = work.path().join("etcd-v3.5.1-linux-amd64-tampered.tar.gz");
    std::fs::write(&tampered, &bytes).unwrap();
    let env = Env::new("deliv", &["update-status-hook-interval=1h"]);
    let root = repo_root();
    let charm = root.to_str().unwrap();

    // A URL served on the controller's bridge (the host's .1 address).
    env.ok(&[
        "deploy",
        charm,
        "e34",
        "--resource",
        &format!("etcd={}", t34.display()),
    ]);
    let s = env.wait("a machine address", MIN, |s| {
        s["machines"]["0"]["dns-name"].is_string()
    });
    let host = s["machines"]["0"]["dns-name"]
        .as_str()
        .unwrap()
        .rsplit_once('.')
        .unwrap()
        .0
        .to_string()
        + ".1";
    let mut server = Command::new("/usr/bin/python3")
        .args(["-m", "http.server", "0", "--bind", &host, "--directory"])
        .arg(work.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let port = {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(server.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        line.split("port ")
            .nth(1)
            .and_then(|p| p.split_whitespace().next())
            .unwrap()
            .to_string()
    };
    let sha = String::from_utf8(Command::new("sha256sum").arg(&t35).output().unwrap().stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let url = format!(
        "http://{host}:{port}/{}",
        t35.file_name().unwrap().to_string_lossy()
    );
    env.ok(&[
        "deploy",
        charm,
        "eurl",
        "--config",
        &format!("archive_url={url}"),
        "--config",
        &format!("archive_sha256={sha}"),
    ]);
    env.ok(&["deploy", charm, "edeb"]);
    env.ok(&[
        "deploy",
        charm,
        "ebad",
        "--resource",
        &format!("etcd={}", tampered.display()),
    ]);

    let s = env.wait("every delivery to settle", 4 * MIN, |s| {
        ["e34", "eurl", "edeb"]
            .iter()
            .all(|a| unit_msg(s, a).1 == "Healthy with 1 known peers")
            && unit_msg(s, "ebad").0 == "blocked"
    });
    assert_eq!(s["applications"]["e34"]["version"], "3.4.23");
    assert_eq!(s["applications"]["eurl"]["version"], "3.5.1");
    assert_eq!(s["applications"]["edeb"]["version"], "3.4.23");
    let (_, msg) = unit_msg(&s, "ebad");
    assert!(
        msg.contains("refused") && msg.contains("attach"),
        "a tampered tarball is refused with a message that says what to attach: {msg}"
    );
    env.exec_ok("edeb/0", "dpkg -s etcd-server | grep -q 'ok installed'");
    env.exec_ok("eurl/0", "readlink /opt/etcd/current | grep -q 3.5.1");

    // The install action never moves a Debian-package unit to other binaries (it would have
    // nothing to roll back to): it refuses, and says which action does that.
    env.ok(&[
        "attach-resource",
        "edeb",
        &format!("etcd={}", t35.display()),
    ]);
    env.wait("edeb to offer snap-upgrade", MIN, |s| {
        unit_msg(s, "edeb").1.contains("snap-upgrade available")
    });
    let (_, task) = env.run_action("edeb/0", &["install"]);
    assert_refused(&task, "runs etcd from the Debian package: run snap-upgrade");
    env.exec_ok(
        "edeb/0",
        "test ! -e /opt/etcd/current && grep -q /usr/bin/etcd /etc/systemd/system/etcd.service \
         && systemctl is-active -q etcd.service",
    );
    assert!(unit_msg(&env.status(), "edeb")
        .1
        .starts_with("Healthy with 1 known peers"));

    // A wrong sha256 for the URL blocks and changes nothing.
    env.ok(&[
        "config",
        "eurl",
        &format!("archive_sha256={}", "0".repeat(64)),
    ]);
    env.wait("the wrong sha256 to block", MIN, |s| {
        unit_msg(s, "eurl")
            .1
            .contains("does not match archive_sha256")
    });
    env.exec_ok("eurl/0", "readlink /opt/etcd/current | grep -q 3.5.1 && test -z \"$(ls /var/cache/etcd-charm/*.partial 2>/dev/null)\"");
    // M5: a download the cache's filesystem has no room for (with 64 MiB kept free) is
    // refused before a byte is written, with the numbers; nothing changes.
    env.exec_ok(
        "eurl/0",
        "mount -t tmpfs -o size=16m tmpfs /var/cache/etcd-charm",
    );
    env.ok(&[
        "config",
        "eurl",
        &format!("archive_sha256={}", "1".repeat(64)),
    ]);
    env.wait("the download without room to block", MIN, |s| {
        let m = unit_msg(s, "eurl").1;
        m.contains("MiB free") && m.contains("check archive_url")
    });
    env.exec_ok(
        "eurl/0",
        "test -z \"$(ls -A /var/cache/etcd-charm)\" && readlink /opt/etcd/current | grep -q 3.5.1 && umount /var/cache/etcd-charm",
    );
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn a_client_on_db_uses_the_credentials_and_sees_the_connection_string_change() {
    let work = tempfile::tempdir().unwrap();
    let t35 = etcd_tarball(work.path(), &etcd35(), "3.5.1");
    let env = Env::new("client", &["update-status-hook-interval=1h"]);
    let root = repo_root();
    env.ok(&[
        "deploy",
        root.to_str().unwrap(),
        "etcd",
        "-n",
        "3",
        "--resource",
        &format!("etcd={}", t35.display()),
    ]);
    env.ok(&[
        "deploy",
        root.join("tests/charms/etcd-client").to_str().unwrap(),
        "client",
    ]);
    env.ok(&["integrate", "etcd:db", "client:db"]);
    env.ok(&["integrate", "etcd:proxy", "client:proxy"]);
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", 3 * MIN);
    let s = env.wait("the client to write and read", 2 * MIN, |s| {
        unit_msg(s, "client").1.starts_with("wrote and read a key")
    });
    let _ = s;
    let cs = |env: &Env| env.exec_ok("client/0", "cat /var/lib/etcd-client/connection_string");
    let expect = |env: &Env| {
        let mut v: Vec<String> = env
            .units("etcd")
            .iter()
            .map(|u| format!("https://{}:2379", env.address(u)))
            .collect();
        v.sort();
        v.join(",")
    };
    assert_eq!(cs(&env), expect(&env));
    // Every etcd unit publishes the same data.
    for u in env.units("etcd") {
        let out = env.exec_ok(
            "client/0",
            &format!("relation-get -r $(relation-ids db) connection_string {u}"),
        );
        assert_eq!(out.trim(), expect(&env), "{u}");
    }
    // proxy: the initial-cluster style string of the started members, and the TLS trio.
    let want_cluster = {
        let mut v: Vec<String> = env
            .units("etcd")
            .iter()
            .map(|u| format!("{}=https://{}:2380", u.replace('/', ""), env.address(u)))
            .collect();
        v.sort();
        v.join(",")
    };
    env.wait("the proxy client to see the cluster", MIN, |_| {
        env.exec_ok(
            "client/0",
            "cat /var/lib/etcd-client/proxy-cluster 2>/dev/null || true",
        )
        .trim()
            == want_cluster
    });
    let trio = env.exec_ok(
        "client/0",
        "relation-get -r $(relation-ids proxy) - etcd/0 --format=json",
    );
    let trio: serde_json::Value = serde_json::from_str(&trio).unwrap();
    for k in ["client_ca", "client_cert", "client_key"] {
        assert!(
            trio[k].as_str().unwrap_or("").contains("-----BEGIN"),
            "{k} on proxy"
        );
    }
    env.ok(&["add-unit", "etcd"]);
    env.wait_units("etcd", 4, "active", "Healthy with 4 known peers", 3 * MIN);
    env.wait("the client to see 4 endpoints", MIN, |_| {
        cs(&env).split(',').count() == 4
    });
    assert_eq!(cs(&env), expect(&env));
    env.ok(&["remove-unit", "--no-prompt", "etcd/1"]);
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", 3 * MIN);
    env.wait("the client to see 3 endpoints", MIN, |_| {
        cs(&env).split(',').count() == 3
    });
    assert_eq!(cs(&env), expect(&env));
    // The client works with the new string: its status names the endpoint count it used
    // (a status left from before says 4), and the key it wrote names the string.
    env.wait("the client to work with 3 endpoints", MIN, |s| {
        let m = unit_msg(s, "client").1;
        m.starts_with("wrote and read a key") && m.ends_with("with 3 endpoints")
    });
    let creds = Creds::from_unit(&env, &env.units("etcd")[0]);
    let out = creds.etcdctl(
        &endpoints(&env),
        true,
        &["get", "client-key", "--print-value-only"],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("written for {}", expect(&env))
    );

    // H5: a client relation that goes takes the shared client certificate with it: every
    // unit serves a new pair, and the clients that stay get it over their relation and keep
    // working with it.
    let served = |env: &Env| -> Vec<String> {
        env.units("etcd")
            .iter()
            .map(|u| env.exec_ok(u, "cat /etc/etcd/pki/client.crt"))
            .collect()
    };
    let before = served(&env)[0].clone();
    assert_eq!(
        env.exec_ok("client/0", "cat /var/lib/etcd-client/client.crt")
            .trim(),
        before.trim()
    );
    env.ok(&["remove-relation", "etcd:proxy", "client:proxy"]);
    env.wait(
        "every unit to serve a new client certificate",
        2 * MIN,
        |_| {
            let now = served(&env);
            now.iter().all(|c| *c == now[0] && *c != before)
        },
    );
    let rotated = served(&env)[0].clone();
    env.wait(
        "the client on db to hold and use the new pair",
        2 * MIN,
        |s| {
            env.exec_ok("client/0", "cat /var/lib/etcd-client/client.crt")
                .trim()
                == rotated.trim()
                && unit_msg(s, "client").1.starts_with("wrote and read a key")
        },
    );
    let r = env.exec(
        "client/0",
        "curl -s -m 5 --cacert /var/lib/etcd-client/ca.crt --cert /var/lib/etcd-client/client.crt \
         --key /var/lib/etcd-client/client.key -X POST $(cut -d, -f1 /var/lib/etcd-client/connection_string)/v3/kv/range -d '{\"key\":\"Y2xpZW50LWtleQ==\"}'",
    );
    assert!(
        r.code == 0 && r.stdout.contains("\"kvs\""),
        "the rotated pair works: {} {}",
        r.stdout,
        r.stderr
    );
}
