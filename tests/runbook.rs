//! The classic charm's runbook (`../shared/runbook.md`), every line in its order, as an
//! operator types it against the local controller, Juju 2.9 spellings included, and then
//! what Trident and StorageOS do with the cluster. Each line's effect is checked, not only
//! its exit code. The runbook's sections are scenarios of their own where they must be: the
//! "limited egress" section deploys `etcd` from a path on `snapd` machines (model
//! `runbook-snap`), "deb to snap" starts from the Debian package (model `runbook-deb`);
//! everything before them runs in one model with a cloud's firewall (`runbook`).
//! Gaps, named: the snap store cannot be reached (snaps are attached as resources), snapd
//! is installed by hand where Ubuntu would have it, `ebs-ssd` is a cloud's pool (refused
//! by name; a loop volume stands in), and Trident's `etcd-copy` is not run here.

mod support;

use serde_json::Value;
use std::process::Command;
use support::etcd::{endpoints, MIN};
use support::*;

/// The runbook's Juju 2.9 spellings, which Juju 3.6 rejects.
const JUJU29: &[&str] = &[
    "run-action",
    "show-action-output",
    "attach",
    "upgrade-charm",
    "add-relation",
];

/// Runs a runbook line from `dir` (where relative host paths of `scp` land) as typed: a
/// Juju 2.9 spelling on a 2.9 client (`CHARM_HARNESS_CLIENT=2.9`), after checking that a
/// 3.6 client refuses the same line as Juju 3.6 does; any other line on a 3.6 client.
fn juju_in(env: &Env, dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = env.cmd();
    if JUJU29.contains(&args[0]) {
        let r = env.run(args);
        assert!(
            r.code == 1
                && r.stderr
                    .contains(&format!("\"{}\" is not a juju command", args[0])),
            "a Juju 3.6 client refuses {args:?}: {}{}",
            r.stdout,
            r.stderr
        );
        cmd.env("CHARM_HARNESS_CLIENT", "2.9");
    }
    let out = cmd.args(args).current_dir(dir).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sha256(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

fn etcdctl_with(vars: &[(&str, String)], args: &[&str]) -> std::process::Output {
    let mut c = Command::new(etcd35().join("etcdctl"));
    c.env_clear().env("PATH", "/usr/bin:/bin");
    for (k, v) in vars {
        c.env(k, v);
    }
    c.args(args).output().unwrap()
}

#[test]
fn the_classic_runbook_lines_work_as_typed() {
    let work = tempfile::tempdir().unwrap();
    let here = work.path();
    // A cloud's firewall, as the runbook assumes: `juju expose etcd` before etcdctl from
    // outside.
    let env = Env::new(
        "runbook",
        &["update-status-hook-interval=1h", "firewall-mode=instance"],
    );
    // Usage: easyrsa and etcd found by name in the controller's charm store; etcd without a
    // resource installs the Debian package from the machines' apt mirror.
    for line in [
        &["deploy", "easyrsa"][..],
        &["deploy", "etcd"],
        &["add-relation", "etcd", "easyrsa"],
        &["add-unit", "-n", "2", "etcd"],
    ] {
        let (code, out, err) = juju_in(&env, here, line);
        assert_eq!(code, 0, "{line:?}: {out}{err}");
    }
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", 5 * MIN);
    // Every unit's server certificate verifies against the CA easyrsa publishes, and the
    // client port trusts that CA alone; the peer port keeps the charm's peer CA (H5: no
    // certificate easyrsa issues to any application is accepted there).
    let easyrsa_ca = env.exec_ok("easyrsa/0", "cat /var/lib/easyrsa/pki/ca.crt");
    until("every unit on easyrsa's certificates", 3 * MIN, || {
        env.units("etcd").iter().all(|u| {
            let peer_ca = env.exec_ok(u, "cat /etc/etcd/pki/peer-ca.crt");
            let peer = env.exec_ok(u, "cat /etc/etcd/pki/peer.crt");
            openssl_verifies(&easyrsa_ca, &env.exec_ok(u, "cat /etc/etcd/pki/server.crt"))
                && openssl_verifies(&peer_ca, &peer)
                && !openssl_verifies(&easyrsa_ca, &peer)
                && env.exec_ok(u, "cat /etc/etcd/pki/ca.crt").trim() == easyrsa_ca.trim()
        })
    });
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", 2 * MIN);
    env.settle("3m");
    let (code, out, err) = juju_in(&env, here, &["status"]);
    assert_eq!(code, 0, "{err}");
    for u in ["etcd/0", "etcd/1", "etcd/2"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(u))
            .unwrap_or_else(|| panic!("status lists {u}: {out}"));
        for want in ["active", "idle", "2379/tcp", "Healthy with 3 known peers"] {
            assert!(
                line.contains(want),
                "{u}'s status line has {want:?}: {line}"
            );
        }
    }
    // Health, Juju 2.9 style: the result keyed by the unit's tag.
    let (code, out, err) = juju_in(
        &env,
        here,
        &[
            "run-action",
            "--wait",
            "etcd/0",
            "health",
            "--format",
            "json",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let r = &v["unit-etcd-0"];
    assert_eq!(r["UnitId"], "etcd/0", "{v}");
    assert_eq!(r["status"], "completed", "{v}");
    let output = r["results"]["output"].as_str().unwrap_or("");
    assert!(output.ends_with("cluster is healthy"), "{output}");
    assert_eq!(output.matches("is healthy: got healthy result").count(), 3);
    // Its Juju 3.6 form: `run`, the result keyed by the unit's name.
    let (code, out, err) = juju_in(&env, here, &["run", "etcd/0", "health", "--format", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["etcd/0"]["status"], "completed", "{v}");
    assert_eq!(v["etcd/0"]["results"]["return-code"], 0, "{v}");
    assert!(v["etcd/0"]["results"]["output"]
        .as_str()
        .is_some_and(|o| o.ends_with("cluster is healthy")));

    // Client credentials: packaged into the ubuntu user's home, fetched with a relative
    // scp path, used from the host with etcdctl's variables.
    let (code, out, err) = juju_in(
        &env,
        here,
        &[
            "run-action",
            "--wait",
            "etcd/0",
            "package-client-credentials",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("/home/ubuntu/etcd_credentials.tar.gz"),
        "{out}"
    );
    // `juju scp` reads as the ubuntu user (the controller does too): the archive is that
    // user's, and still unreadable by any other.
    let owner = env.exec_ok(
        "etcd/0",
        "stat -c '%U %a' /home/ubuntu/etcd_credentials.tar.gz",
    );
    assert_eq!(owner.trim(), "ubuntu 600");
    let other = env.exec(
        "etcd/0",
        "useradd -M someone 2>/dev/null; runuser -u someone -- cat /home/ubuntu/etcd_credentials.tar.gz >/dev/null",
    );
    assert_ne!(other.code, 0, "another user read the credentials archive");
    let (code, out, err) = juju_in(
        &env,
        here,
        &[
            "scp",
            "etcd/0:etcd_credentials.tar.gz",
            "etcd_credentials.tar.gz",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let st = Command::new("tar")
        .args(["-xzf", "etcd_credentials.tar.gz"])
        .current_dir(here)
        .status()
        .unwrap();
    assert!(st.success());
    let creds = here.join("etcd_credentials");
    let key_mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(creds.join("client.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(key_mode, 0o600, "the client key stays private on the host");
    let vars = [
        (
            "ETCDCTL_KEY",
            creds.join("client.key").display().to_string(),
        ),
        (
            "ETCDCTL_CERT",
            creds.join("client.crt").display().to_string(),
        ),
        ("ETCDCTL_CACERT", creds.join("ca.crt").display().to_string()),
        ("ETCDCTL_ENDPOINTS", endpoints(&env)),
    ];
    let unexposed = etcdctl_with(
        &vars,
        &[
            "member",
            "list",
            "--dial-timeout=2s",
            "--command-timeout=3s",
        ],
    );
    assert!(
        !unexposed.status.success(),
        "the host reached an unexposed etcd"
    );
    let (code, out, err) = juju_in(&env, here, &["expose", "etcd"]);
    assert_eq!(code, 0, "{out}{err}");
    let out = etcdctl_with(&vars, &["member", "list"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
    // The etcd <= 3.2 names: an older etcdctl speaks the v2 API, which the classic charm
    // served; here `enable_v2=true` turns it on (a rolling restart), and etcdctl 3.4 in v2
    // mode reads ETCDCTL_CA_FILE, ETCDCTL_CERT_FILE, ETCDCTL_KEY_FILE and ETCDCTL_ENDPOINT.
    let first = endpoints(&env).split(',').next().unwrap().to_string();
    let v2 = || {
        Command::new(etcd34().join("etcdctl"))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("ETCDCTL_API", "2")
            .env("ETCDCTL_CA_FILE", creds.join("ca.crt"))
            .env("ETCDCTL_CERT_FILE", creds.join("client.crt"))
            .env("ETCDCTL_KEY_FILE", creds.join("client.key"))
            .env("ETCDCTL_ENDPOINT", &first)
            .args(["member", "list"])
            .output()
            .unwrap()
    };
    assert!(!v2().status.success(), "no v2 API unless asked for");
    env.ok(&["config", "etcd", "enable_v2=true"]);
    env.wait("the v2 API on every member", 3 * MIN, |s| {
        let out = v2();
        out.status.success()
            && String::from_utf8_lossy(&out.stdout).lines().count() == 3
            && s["applications"]["etcd"]["units"]
                .as_object()
                .is_some_and(|u| u.values().all(|x| x["juju-status"]["current"] == "idle"))
    });
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", 2 * MIN);
    let out = etcdctl_with(&vars, &["put", "/runbook/key", "kept"]);
    assert!(out.status.success(), "{out:?}");

    // Persistent storage: the controller's pools, and a volume from one of them for etcd/0
    // (the runbook's `ebs-ssd` is a cloud's pool: named and refused here).
    let (code, out, err) = juju_in(&env, here, &["list-storage-pools"]);
    assert!(code == 0 && out.contains("loop"), "{out}{err}");
    let (code, _, err) = juju_in(&env, here, &["add-storage", "etcd/0", "data=ebs-ssd,10G"]);
    assert!(
        code != 0 && err.contains("pool \"ebs-ssd\" not found"),
        "{err}"
    );
    let (code, out, err) = juju_in(&env, here, &["add-storage", "etcd/0", "data=loop,10G"]);
    assert_eq!(code, 0, "{out}{err}");
    env.wait("etcd/0's data on its volume", 3 * MIN, |_| {
        env.exec(
            "etcd/0",
            "grep -q '^data-dir: /media/etcd/data' /etc/etcd/etcd.conf.yml && findmnt -n /media/etcd >/dev/null",
        )
        .code
            == 0
    });
    env.settle("3m");
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", MIN);

    // A snapshot into a directory of the operator's choosing, waited for (2.9 output).
    let (code, out, err) = juju_in(
        &env,
        here,
        &[
            "run-action",
            "--wait",
            "etcd/0",
            "snapshot",
            "target=/mnt/etcd-backups",
            "keys-version=v3",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    // Juju 2.9 prints YAML by default.
    let v: Value = serde_yaml::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let r = &v["unit-etcd-0"]["results"]["snapshot"];
    let path = r["path"].as_str().unwrap_or_else(|| panic!("{v}"));
    assert!(path.starts_with("/mnt/etcd-backups/"), "{v}");
    let on_unit = env.exec_ok(
        "etcd/0",
        &format!("stat -c %a {path} && sha256sum {path} | cut -d' ' -f1"),
    );
    assert_eq!(
        on_unit.split_whitespace().collect::<Vec<_>>(),
        ["600", r["sha256"].as_str().unwrap()],
        "the snapshot in /mnt/etcd-backups is private and has the digest reported"
    );
    // A queued snapshot: its id, its output, the file fetched and checked.
    let (code, out, err) = juju_in(
        &env,
        here,
        &["run-action", "etcd/0", "snapshot", "keys-version=v3"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let id = out
        .trim()
        .strip_prefix("Action queued with id: ")
        .unwrap_or_else(|| panic!("run-action without --wait prints the id: {out}"))
        .trim_matches('"')
        .to_string();
    env.wait("the queued snapshot to finish", 2 * MIN, |_| {
        let (_, out, _) = juju_in(&env, here, &["show-action-output", &id, "--format", "json"]);
        serde_json::from_str::<Value>(&out)
            .map(|v| v["status"] == "completed")
            .unwrap_or(false)
    });
    let (_, out, _) = juju_in(&env, here, &["show-action-output", &id, "--format", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    // Juju 2.9's compat keys: the exit code as the string `Code`.
    assert_eq!(v["results"]["Code"], "0", "{v}");
    assert_eq!(v["UnitId"], "etcd/0", "{v}");
    let snap = &v["results"]["snapshot"];
    let path = snap["path"].as_str().unwrap().to_string();
    assert!(path.starts_with("/home/ubuntu/etcd-snapshots/"), "{v}");
    let copy = v["results"]["copy"]["cmd"].as_str().unwrap_or("");
    assert!(copy.contains(&format!("etcd/0:{path}")), "copy.cmd: {copy}");
    let (code, out, err) = juju_in(&env, here, &["scp", &format!("etcd/0:{path}"), "."]);
    assert_eq!(code, 0, "{out}{err}");
    let fetched = here.join(std::path::Path::new(&path).file_name().unwrap());
    assert_eq!(sha256(&fetched), snap["sha256"].as_str().unwrap());
    assert_eq!(
        std::fs::metadata(&fetched).unwrap().len().to_string(),
        snap["size"].as_str().unwrap()
    );
    // show-task (Juju 3) reads the same task.
    let (code, out, _) = juju_in(&env, here, &["show-task", &id, "--format", "json"]);
    assert_eq!(code, 0);
    let t: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(t["results"]["snapshot"]["sha256"], snap["sha256"]);

    // What the charm offers, as `actions` and `show-action` list it.
    let (_, out, _) = juju_in(&env, here, &["actions", "etcd"]);
    for a in [
        "health",
        "snapshot",
        "restore",
        "package-client-credentials",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(a)),
            "actions lists {a}: {out}"
        );
    }
    let (_, out, _) = juju_in(&env, here, &["show-action", "etcd", "restore"]);
    assert!(
        out.contains("Arguments:") && out.contains("skip-backup"),
        "{out}"
    );

    // Restore through the 2.9 spellings: the key deleted, the snapshot attached, the leader
    // restores, the key is back.
    let out = etcdctl_with(&vars, &["del", "/runbook/key"]);
    assert!(out.status.success(), "{out:?}");
    let out = etcdctl_with(&vars, &["get", "/runbook/key", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "", "deleted");
    let (code, out, err) = juju_in(
        &env,
        here,
        &[
            "attach",
            "etcd",
            &format!(
                "snapshot={}",
                fetched.file_name().unwrap().to_string_lossy()
            ),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = juju_in(
        &env,
        here,
        &["run-action", "--wait", "etcd/leader", "restore"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_completed(&out);
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", 3 * MIN);
    env.wait("the restored key", MIN, |_| {
        let out = etcdctl_with(&vars, &["get", "/runbook/key", "--print-value-only"]);
        String::from_utf8_lossy(&out.stdout).trim() == "kept"
    });

    // The migration lines: a new application from the store by name (focal, the classic
    // channel; without an etcd resource: the Debian package), the snapshot attached from
    // the current directory, restored, then grown and used by Kubernetes.
    let snapshot_file = format!("./{}", fetched.file_name().unwrap().to_string_lossy());
    let lines: [&[&str]; 3] = [
        &[
            "deploy",
            "etcd",
            "new-etcd",
            "--series=focal",
            "--config",
            "channel=3.4/stable",
        ],
        &[
            "attach-resource",
            "new-etcd",
            &format!("snapshot={snapshot_file}"),
        ],
        &["run", "new-etcd/0", "restore"],
    ];
    for line in lines {
        if line[0] == "run" {
            env.wait_units(
                "new-etcd",
                1,
                "active",
                "Healthy with 1 known peers",
                3 * MIN,
            );
        }
        let (code, out, err) = juju_in(&env, here, line);
        assert_eq!(code, 0, "{line:?}: {out}{err}");
    }
    env.ok(&["expose", "new-etcd"]);
    let key_in_new_etcd = |what: &str| {
        let new_creds = support::etcd::Creds::from_unit(&env, "new-etcd/0");
        let new_ep = format!("https://{}:2379", env.address("new-etcd/0"));
        env.wait(what, 2 * MIN, |_| {
            let out = new_creds.etcdctl(
                &new_ep,
                true,
                &["get", "/runbook/key", "--print-value-only"],
            );
            String::from_utf8_lossy(&out.stdout).trim() == "kept"
        });
    };
    key_in_new_etcd("the key in new-etcd");
    // `integrate new-etcd kubernetes-control-plane`: a stand-in with the real charm's name and
    // its `etcd` endpoint (interface etcd), running the test etcd client's dispatch; then the
    // new application grows to three and answers `run ... health`.
    let k8s = here.join("kubernetes-control-plane");
    std::fs::create_dir_all(&k8s).unwrap();
    std::fs::write(
        k8s.join("metadata.yaml"),
        "name: kubernetes-control-plane\nsummary: stand-in\ndescription: stand-in\n\
         requires:\n  etcd:\n    interface: etcd\n",
    )
    .unwrap();
    let dispatch = repo_root().join("tests/charms/etcd-client/dispatch");
    assert!(Command::new("cp")
        .arg("-p")
        .arg(&dispatch)
        .arg(k8s.join("dispatch"))
        .status()
        .unwrap()
        .success());
    let (code, out, err) = juju_in(&env, here, &["deploy", "./kubernetes-control-plane"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = juju_in(
        &env,
        here,
        &["integrate", "new-etcd", "kubernetes-control-plane"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = juju_in(&env, here, &["add-unit", "new-etcd", "-n", "2"]);
    assert_eq!(code, 0, "{out}{err}");
    env.wait_units(
        "new-etcd",
        3,
        "active",
        "Healthy with 3 known peers",
        4 * MIN,
    );
    env.wait("kubernetes-control-plane to use all three", 2 * MIN, |s| {
        s["applications"]["kubernetes-control-plane"]["units"]["kubernetes-control-plane/0"]
            ["workload-status"]["message"]
            .as_str()
            .is_some_and(|m| {
                m.starts_with("wrote and read a key") && m.ends_with("with 3 endpoints")
            })
    });
    let (code, out, err) = juju_in(
        &env,
        here,
        &["run", "new-etcd/0", "health", "--format", "json"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let task = v.as_object().and_then(|o| o.values().next()).cloned();
    let output = task
        .as_ref()
        .and_then(|t| t["results"]["output"].as_str())
        .unwrap_or("");
    assert!(output.ends_with("cluster is healthy"), "{v}");
    assert_eq!(
        output.matches("is healthy: got healthy result").count(),
        3,
        "{output}"
    );
    // The runbook's other form: the snapshot given at deploy time (a new-etcd of its own:
    // the first one is removed), restored with the 2.9 spelling.
    env.ok(&["remove-application", "new-etcd"]);
    env.wait("new-etcd to be gone", 3 * MIN, |s| {
        s["applications"]["new-etcd"].is_null()
    });
    let (code, out, err) = juju_in(
        &env,
        here,
        &[
            "deploy",
            "etcd",
            "new-etcd",
            "--resource",
            &format!("snapshot={snapshot_file}"),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    env.wait_units(
        "new-etcd",
        1,
        "active",
        "Healthy with 1 known peers",
        3 * MIN,
    );
    let (code, out, err) = juju_in(
        &env,
        here,
        &["run-action", "--wait", "new-etcd/0", "restore"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_completed(&out);
    env.ok(&["expose", "new-etcd"]);
    key_in_new_etcd("the key in the second new-etcd");
    let (code, _, err) = juju_in(&env, here, &["deploy", "no-such-charm"]);
    assert_ne!(code, 0);
    assert!(err.contains("not found in CHARM_HARNESS_CHARMHUB"), "{err}");

    // ssh runs a command in the ubuntu user's home.
    let (code, out, err) = juju_in(&env, here, &["ssh", "etcd/leader", "pwd"]);
    assert_eq!((code, out.trim()), (0, "/home/ubuntu"), "{err}");
    let (code, out, err) = juju_in(
        &env,
        here,
        &["exec", "--machine", "0", "--", "echo $HOME; pwd"],
    );
    assert_eq!((code, out.as_str()), (0, "/root\n/root\n"), "{err}");

    // A file onto a unit (relative: the ubuntu user's home, owned by that user) and back.
    std::fs::write(here.join("note.txt"), "from the host\n").unwrap();
    let (code, out, err) = juju_in(&env, here, &["scp", "note.txt", "etcd/1:note.txt"]);
    assert_eq!(code, 0, "{out}{err}");
    let owner = env.exec_ok("etcd/1", "stat -c %U:%a /home/ubuntu/note.txt");
    assert_eq!(owner.trim(), "ubuntu:644");
    assert_eq!(
        env.exec_ok("etcd/1", "cat /home/ubuntu/note.txt"),
        "from the host\n"
    );

    // Bad input names what is wrong and changes nothing.
    for (args, says) in [
        (
            vec!["show-action-output", "9999"],
            "task \"9999\" not found",
        ),
        (vec!["show-task", "abc"], "\"abc\" is not a task id"),
        (
            vec!["scp", "etcd/0:no/such/file", "."],
            "No such file or directory",
        ),
        (vec!["scp", "etcd/9:x", "."], "unit \"etcd/9\" not found"),
        (vec!["scp", "a", "b"], "names a unit or machine"),
        (
            vec!["run-action", "etcd/0", "no-such-action"],
            "not defined",
        ),
        (
            vec!["show-action", "etcd", "nope"],
            "has no action \"nope\"",
        ),
        (vec!["ssh", "etcd/0"], "give a command"),
        (
            vec!["integrate", "kubernetes-control-plane", "easyrsa"],
            "no relations found",
        ),
    ] {
        let (code, out, err) = juju_in(&env, here, &args);
        assert_ne!(code, 0, "{args:?}: {out}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert!(!here.join("file").exists() && !here.join("x").exists());

    consumers(&env, here, &creds);
    drop(env);
    limited_egress();
    deb_to_snap();
}

/// A `run-action --wait` answer (Juju 2.9's YAML) of one task that completed.
fn assert_completed(out: &str) {
    let v: Value = serde_yaml::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let task = v.as_object().and_then(|o| o.values().next()).cloned();
    assert_eq!(
        task.as_ref().map(|t| t["status"].clone()),
        Some(Value::from("completed")),
        "{out}"
    );
}

/// What Trident and StorageOS do with the cluster: the client credentials kept under file
/// names of their own, `member list -w table`, put/get/del from outside; StorageOS's
/// settings (an 8 GiB quota, revision compaction keeping 1000, non-default client and peer
/// ports), checked in what etcd itself reports.
fn consumers(env: &Env, here: &std::path::Path, creds: &std::path::Path) {
    let own = here.join("storage-system");
    std::fs::create_dir_all(&own).unwrap();
    for (from, to) in [
        ("ca.crt", "etcd-ca.pem"),
        ("client.crt", "etcd-client.pem"),
        ("client.key", "etcd-client-key.pem"),
    ] {
        std::fs::copy(creds.join(from), own.join(to)).unwrap();
    }
    let etcdctl = |endpoint: &str, args: &[&str]| {
        let out = Command::new(etcd35().join("etcdctl"))
            .env_clear()
            .arg(format!("--endpoints={endpoint}"))
            .arg(format!("--cert={}", own.join("etcd-client.pem").display()))
            .arg(format!(
                "--key={}",
                own.join("etcd-client-key.pem").display()
            ))
            .arg(format!("--cacert={}", own.join("etcd-ca.pem").display()))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let host = env.address("etcd/0");
    let ep = format!("https://{host}:2379");
    let table = etcdctl(&ep, &["member", "list", "-w", "table"]);
    assert_eq!(table.matches("| started |").count(), 3, "{table}");
    assert_eq!(etcdctl(&ep, &["put", "foo", "bar"]).trim(), "OK");
    assert_eq!(etcdctl(&ep, &["get", "foo"]), "foo\nbar\n");
    assert_eq!(etcdctl(&ep, &["del", "foo"]).trim(), "1");

    env.ok(&[
        "config",
        "etcd",
        "quota_backend_bytes=8589934592",
        "auto_compaction_mode=revision",
        "auto_compaction_retention=1000",
        "port=12379",
        "management_port=12380",
    ]);
    // Every member serves on the new ports with the new settings (etcd's own metrics and
    // member list say so), and the firewall follows: the new client port is reachable from
    // the host on the exposed application, the old one no longer opened.
    let metrics = |unit: &str| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5", "--cert"])
            .arg(own.join("etcd-client.pem"))
            .arg("--key")
            .arg(own.join("etcd-client-key.pem"))
            .arg("--cacert")
            .arg(own.join("etcd-ca.pem"))
            .arg(format!("https://{}:12379/metrics", env.address(unit)))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    env.wait("StorageOS's settings on every member", 4 * MIN, |_| {
        env.units("etcd").iter().all(|u| {
            metrics(u)
                .lines()
                .any(|l| l == "etcd_server_quota_backend_bytes 8.589934592e+09")
        })
    });
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", 2 * MIN);
    let ep = format!("https://{host}:12379");
    let members = etcdctl(&ep, &["member", "list"]);
    assert_eq!(members.matches(":12380, https://").count(), 3, "{members}");
    for u in env.units("etcd") {
        let conf = env.exec_ok(&u, "cat /etc/etcd/etcd.conf.yml");
        for want in [
            "auto-compaction-mode: revision",
            "auto-compaction-retention: '1000'",
        ] {
            assert!(conf.contains(want), "{u}'s config has {want}: {conf}");
        }
    }
    let s = env.status();
    let ports = &s["applications"]["etcd"]["units"]["etcd/0"]["open-ports"];
    assert_eq!(ports, &serde_json::json!(["12379/tcp"]), "{s}");
}

/// The snap's etcdctl inside a unit, with the unit's client certificate.
fn snap_etcdctl(env: &Env, unit: &str, args: &str) -> String {
    let ep = format!("https://{}:2379", env.address(unit));
    env.exec_ok(
        unit,
        &format!(
            "/snap/bin/etcdctl --endpoints={ep} --cacert=/etc/etcd/pki/ca.crt \
             --cert=/etc/etcd/pki/client.crt --key=/etc/etcd/pki/client.key {args}"
        ),
    )
}

fn snap_version(env: &Env, unit: &str) -> String {
    env.exec_ok(unit, "snap list etcd | awk 'NR==2{print $2}'")
        .trim()
        .to_string()
}

/// Waits for a queued task (`Action queued with id: <id>`) through `show-action-output`.
fn wait_queued(env: &Env, out: &str, what: &str) -> Value {
    let id = out
        .trim()
        .strip_prefix("Action queued with id: ")
        .unwrap_or_else(|| panic!("run-action prints the id: {out}"))
        .trim_matches('"')
        .to_string();
    env.wait(what, 4 * MIN, |_| {
        let out = env.run29(&["show-action-output", &id, "--format", "json"]);
        serde_json::from_str::<Value>(&out.stdout)
            .is_ok_and(|v| v["status"] != "running" && v["status"] != "pending")
    });
    let out = env.run29(&["show-action-output", &id, "--format", "json"]);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["status"], "completed", "{what}: {v}");
    v
}

/// "Limited egress": the charm deployed from a path with no resource and no store, the snap
/// attached with `attach`, a newer one attached later and installed unit by unit with
/// `run-action` (queued, read back with `show-action-output`).
fn limited_egress() {
    let env = Env::new(
        "runbook-snap",
        &["update-status-hook-interval=1h", "harness-machine=snapd"],
    );
    let root = repo_root();
    env.ok(&["deploy", root.to_str().unwrap()]);
    env.ok(&["add-unit", "etcd"]);
    env.ok29(&[
        "attach",
        "etcd",
        &format!("etcd={}", snap_fixture("3.4.23").display()),
    ]);
    env.wait_units("etcd", 2, "active", "Healthy with 2 known peers", 6 * MIN);
    assert!(snap_etcdctl(&env, "etcd/0", "put /runbook-snap kept").contains("OK"));
    env.ok29(&[
        "attach",
        "etcd",
        &format!("etcd={}", snap_fixture("3.5.1").display()),
    ]);
    env.settle("2m");
    assert_eq!(
        snap_version(&env, "etcd/0"),
        "3.4.23",
        "attaching alone upgrades nothing"
    );
    for unit in ["etcd/0", "etcd/1"] {
        let out = env.ok29(&["run-action", unit, "install"]);
        wait_queued(&env, &out, &format!("install on {unit}"));
        assert_eq!(
            snap_version(&env, unit),
            "3.5.1",
            "{unit} installed the new snap"
        );
    }
    env.wait_units("etcd", 2, "active", "Healthy with 2 known peers", 2 * MIN);
    assert_eq!(
        snap_etcdctl(&env, "etcd/1", "get /runbook-snap --print-value-only").trim(),
        "kept"
    );
}

/// "Deb to snap": etcd from the store on the Debian package, `upgrade-charm etcd` (the store
/// asked again), the snap attached (the store's stand-in) and snapd installed by hand (the
/// machines' image has none; Ubuntu's does), `run-action etcd/0 snap-upgrade` (status back
/// to its health message, the key kept, the snap's etcd running), then
/// `config channel=3.0/stable` (nothing to fetch with a snap attached: it stays, healthy)
/// and `config snapd_refresh='fri5'` (the shell drops the quotes).
fn deb_to_snap() {
    let env = Env::new("runbook-deb", &["update-status-hook-interval=1h"]);
    env.ok(&["deploy", "etcd"]);
    env.wait_units("etcd", 1, "active", "Healthy with 1 known peers", 3 * MIN);
    assert_eq!(running_etcd(&env, "etcd/0"), "/usr/bin/etcd");
    let deb_etcdctl = "etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/etcd/pki/ca.crt \
                       --cert=/etc/etcd/pki/client.crt --key=/etc/etcd/pki/client.key";
    env.exec_ok("etcd/0", &format!("{deb_etcdctl} put /deb-key kept"));
    let (code, out) = {
        let r = env.run29(&["upgrade-charm", "etcd"]);
        (r.code, format!("{}{}", r.stdout, r.stderr))
    };
    assert_eq!(code, 0, "{out}");
    offer_snap_upgrade(&env, "attach");
    let out = env.ok29(&["run-action", "etcd/0", "snap-upgrade"]);
    wait_queued(&env, &out, "snap-upgrade on etcd/0");
    env.wait_units("etcd", 1, "active", "Healthy with 1 known peers", 2 * MIN);
    env.exec_ok(
        "etcd/0",
        "systemctl show -p ExecStart etcd.service | grep -q /snap/bin/etcd",
    );
    assert_eq!(
        snap_etcdctl(&env, "etcd/0", "get /deb-key --print-value-only").trim(),
        "kept"
    );
    env.ok(&["config", "etcd", "channel=3.0/stable"]);
    env.settle("2m");
    assert_eq!(
        snap_version(&env, "etcd/0"),
        "3.5.1",
        "stays on the attached snap"
    );
    env.wait_units("etcd", 1, "active", "Healthy with 1 known peers", MIN);
    env.ok(&["config", "etcd", "snapd_refresh=fri5"]);
    env.wait("refresh.timer fri5", 2 * MIN, |_| {
        env.exec_ok("etcd/0", "snap get system refresh.timer")
            .trim()
            == "fri5"
    });
}
