//! The classic charm's runbook (`../shared/runbook.md`) as an operator types it against the
//! local controller, Juju 2.9 spellings included: `run-action [--wait]`,
//! `show-action-output`, `show-task`, `actions`, `show-action`, `scp` (relative paths mean
//! the ubuntu user's home), `ssh`, `attach`, `<app>/leader`, `deploy etcd` by name (from
//! `CHARM_HARNESS_CHARMHUB`), `expose` (the model
//! has a cloud's firewall: the host reaches etcd only once it is exposed), both generations
//! of etcdctl's variables, `list-storage-pools`/`add-storage`, the migration to `new-etcd`.
//! Each line's effect is checked, not only its exit code. The snap lines run on snapd
//! machines in tests/snaps.rs; the first three (easyrsa) and the CA moves in
//! tests/easyrsa.rs, the packed charm in tests/packing.rs.

mod support;

use serde_json::Value;
use std::process::Command;
use support::etcd::{endpoints, MIN};
use support::*;

/// Runs the controller's CLI from `dir` (where relative host paths of `scp` land).
fn juju_in(env: &Env, dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = env.cmd().args(args).current_dir(dir).output().unwrap();
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
    let tarball = etcd_tarball(here, &etcd35(), "3.5.1");
    // A cloud's firewall, as the runbook assumes: `juju expose etcd` before etcdctl from
    // outside.
    let env = Env::new(
        "runbook",
        &["update-status-hook-interval=1h", "firewall-mode=instance"],
    );
    // `juju deploy etcd`: found by name in the controller's charm store. (The first lines,
    // with easyrsa, are tests/easyrsa.rs's: here the built-in CA issues.)
    env.ok(&[
        "deploy",
        "etcd",
        "--resource",
        &format!("etcd={}", tarball.display()),
    ]);
    env.wait_units("etcd", 1, "active", "Healthy with 1 known peers", 2 * MIN);
    env.ok(&["add-unit", "-n", "2", "etcd"]);
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", 3 * MIN);
    env.settle("3m");

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
            "grep -q '^data-dir: .*/var/lib/juju/storage/data/0' /etc/etcd/etcd.conf.yml && findmnt -n /var/lib/juju/storage/data/0 >/dev/null",
        )
        .code
            == 0
    });
    env.settle("3m");
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", MIN);

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
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", 3 * MIN);
    env.wait("the restored key", MIN, |_| {
        let out = etcdctl_with(&vars, &["get", "/runbook/key", "--print-value-only"]);
        String::from_utf8_lossy(&out.stdout).trim() == "kept"
    });

    // The same snapshot into a new application deployed by name (the migration lines).
    let (code, out, err) = juju_in(
        &env,
        here,
        &[
            "deploy",
            "etcd",
            "new-etcd",
            "--series=focal",
            "--config",
            "channel=3.4/stable",
            "--resource",
            &format!("etcd={}", tarball.display()),
            "--resource",
            &format!(
                "snapshot={}",
                fetched.file_name().unwrap().to_string_lossy()
            ),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    env.wait_units(
        "new-etcd",
        1,
        "active",
        "Healthy with 1 known peers",
        2 * MIN,
    );
    let (code, out, err) = juju_in(
        &env,
        here,
        &["run-action", "--wait", "new-etcd/0", "restore"],
    );
    assert_eq!(code, 0, "{out}{err}");
    env.ok(&["expose", "new-etcd"]);
    let new_creds = support::etcd::Creds::from_unit(&env, "new-etcd/0");
    let new_ep = format!("https://{}:2379", env.address("new-etcd/0"));
    env.wait("the key in new-etcd", MIN, |_| {
        let out = new_creds.etcdctl(
            &new_ep,
            true,
            &["get", "/runbook/key", "--print-value-only"],
        );
        String::from_utf8_lossy(&out.stdout).trim() == "kept"
    });
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
        3 * MIN,
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
    ] {
        let (code, out, err) = juju_in(&env, here, &args);
        assert_ne!(code, 0, "{args:?}: {out}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert!(!here.join("file").exists() && !here.join("x").exists());
}
