//! The actions through the local controller, with real etcd.

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::*;

const MIN: Duration = Duration::from_secs(60);

fn deploy3(env: &Env, work: &Path) {
    let tarball = etcd_tarball(work, &etcd35(), "3.5.1");
    deploy_healthy(env, 3, &tarball, &[]);
}

/// A file inside a unit's machine, read from the host.
fn etcdctl(env_vars: &[(String, String)], args: &[&str]) -> std::process::Output {
    let mut c = Command::new(etcd35().join("etcdctl"));
    // etcdctl refuses a flag that shadows its environment variable
    let explicit = args.contains(&"--endpoints");
    for (k, v) in env_vars {
        if !(explicit && k == "ETCDCTL_ENDPOINTS") {
            c.env(k, v);
        }
    }
    c.args(["--dial-timeout=3s", "--command-timeout=5s"])
        .args(args)
        .output()
        .unwrap()
}

/// Unpacks the credentials package on the host and returns the README's exports.
fn credentials(env: &Env, work: &Path) -> Vec<(String, String)> {
    let (code, task) = env.run_action("etcd/0", &["package-client-credentials"]);
    assert_eq!(code, 0, "{task}");
    let path = task["results"]["path"].as_str().unwrap();
    let host = env.machine_file("etcd/0", path);
    let meta = std::fs::metadata(&host).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "the credentials package is private"
    );
    let out = Command::new("tar")
        .arg("-xzf")
        .arg(&host)
        .arg("-C")
        .arg(work)
        .output()
        .unwrap();
    assert!(out.status.success());
    let readme = std::fs::read_to_string(work.join("etcd_credentials/README.txt")).unwrap();
    readme
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_string(), v.replace("$PWD", work.to_str().unwrap()))
        })
        .filter(|(k, _)| !k.ends_with("_FILE"))
        .collect()
}

#[test]
fn health_credentials_and_bad_params() {
    let work = tempfile::tempdir().unwrap();
    let env = Env::new("act", &["update-status-hook-interval=1h"]);
    deploy3(&env, work.path());

    let (code, task) = env.run_action("etcd/1", &["health"]);
    assert_eq!(code, 0, "{task}");
    let output = task["results"]["output"].as_str().unwrap();
    assert!(output.ends_with("cluster is healthy"), "{output}");
    assert_eq!(
        output.matches("is healthy: got healthy result").count(),
        3,
        "{output}"
    );
    let leaders = task["results"]["members"]
        .as_object()
        .unwrap()
        .values()
        .filter(|m| m["leader"] == "true")
        .count();
    assert_eq!(leaders, 1);

    // The packaged credentials work from the host against every endpoint.
    let vars = credentials(&env, work.path());
    let eps = vars
        .iter()
        .find(|(k, _)| k == "ETCDCTL_ENDPOINTS")
        .unwrap()
        .1
        .clone();
    assert_eq!(eps.split(',').count(), 3);
    let out = etcdctl(&vars, &["put", "greeting", "hello"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for ep in eps.split(',') {
        let out = etcdctl(
            &vars,
            &["--endpoints", ep, "get", "greeting", "--print-value-only"],
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "hello",
            "via {ep}"
        );
    }

    // Bad params fail the action with a clear message and change nothing.
    let (code, task) = env.run_action("etcd/0", &["snapshot", "keys-version=v4"]);
    assert_eq!(
        code, 0,
        "a refusal is a failed task that exits 0, as on Juju 3.6"
    );
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["status"], "failed");
    assert!(
        task["message"]
            .as_str()
            .unwrap()
            .contains("keys-version \"v4\""),
        "{task}"
    );
    // Issue 22: an archive is never written into etcd's own files, however spelled.
    for target in ["/var/lib/etcd/snaps", "/var//lib/./etcd"] {
        let (_, task) = env.run_action("etcd/0", &["snapshot", &format!("target={target}")]);
        assert_refused(&task, "must be outside etcd's own files");
    }
    // M5: a target without room for the snapshot (and the margin kept free) is refused
    // with the numbers, before anything is written.
    env.exec_ok(
        "etcd/0",
        "mkdir -p /mnt/tiny && mount -t tmpfs -o size=1m tmpfs /mnt/tiny",
    );
    let (_, task) = env.run_action("etcd/0", &["snapshot", "target=/mnt/tiny"]);
    assert_refused(&task, "not enough free space in /mnt/tiny for the snapshot");
    assert!(
        task["message"].as_str().unwrap_or("").contains("MiB free"),
        "{task}"
    );
    assert_eq!(
        env.exec_ok("etcd/0", "ls -A /mnt/tiny").trim(),
        "",
        "nothing written"
    );
    env.exec_ok("etcd/0", "umount /mnt/tiny");
    let (code, task) = env.run_action("etcd/0", &["snapshot", "target=/proc/forbidden"]);
    assert_eq!(
        code, 0,
        "a refusal is a failed task that exits 0, as on Juju 3.6"
    );
    assert_eq!(task["status"], "failed", "{task}");
    assert!(
        task["message"].as_str().unwrap().contains("target"),
        "{task}"
    );
    let (code, task) = env.run_action("etcd/0", &["compact", "revision=abc"]);
    assert_eq!(
        code, 0,
        "a refusal is a failed task that exits 0, as on Juju 3.6"
    );
    assert_eq!(task["status"], "failed", "{task}");
    assert!(
        task["message"]
            .as_str()
            .unwrap()
            .contains("\"abc\" is not a number"),
        "{task}"
    );
    // compact: an older revision of a key is readable before, gone after.
    assert!(etcdctl(&vars, &["put", "compact-key", "first"])
        .status
        .success());
    let revision = || {
        let out = etcdctl(&vars, &["get", "compact-key", "-w", "json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["header"]["revision"].as_u64().unwrap()
    };
    let old_rev = revision();
    assert!(etcdctl(&vars, &["put", "compact-key", "second"])
        .status
        .success());
    let read_old = || {
        etcdctl(
            &vars,
            &[
                "get",
                "compact-key",
                &format!("--rev={old_rev}"),
                "--print-value-only",
            ],
        )
    };
    assert_eq!(String::from_utf8_lossy(&read_old().stdout).trim(), "first");
    let now = revision();
    let (code, task) = env.run_action("etcd/0", &["compact"]);
    assert_eq!(code, 0, "{task}");
    assert_eq!(task["results"]["revision"], now.to_string(), "{task}");
    let after = read_old();
    assert!(
        !after.status.success() && String::from_utf8_lossy(&after.stderr).contains("compacted"),
        "revision {old_rev} is compacted away: {}",
        String::from_utf8_lossy(&after.stderr)
    );
    let (code, task) = env.run_action("etcd/0", &["alarm-list"]);
    assert_eq!(code, 0, "{task}");
    assert_eq!(task["results"]["count"], "0");
    // Raise a NOSPACE alarm through the gateway; the actions list and disarm it.
    support::etcd::raise_alarm(
        &work.path().join("etcd_credentials"),
        &format!("https://{}:2379", env.address("etcd/0")),
        "NOSPACE",
    );
    let (_, task) = env.run_action("etcd/0", &["alarm-list"]);
    assert_eq!(task["results"]["count"], "1", "{task}");
    assert!(task["results"]["alarm-list"]
        .as_str()
        .unwrap()
        .contains("alarm:NOSPACE"));
    let (code, task) = env.run_action("etcd/0", &["alarm-disarm"]);
    assert_eq!(code, 0, "{task}");
    assert_eq!(task["results"]["remaining"], "0");
    // keys-version v2: etcd 3.5.1's etcdctl still has the offline v2 backup: an archive
    // holding the member's WAL and snapshot directories, private to root.
    let (code, task) = env.run_action(
        "etcd/0",
        &["snapshot", "keys-version=v2", "target=/root/v2"],
    );
    assert_eq!(code, 0, "{task}");
    assert_eq!(task["results"]["snapshot"]["version"], "v2", "{task}");
    let archive = env.machine_file(
        "etcd/0",
        task["results"]["snapshot"]["path"].as_str().unwrap(),
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&archive).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let list = Command::new("tar")
        .arg("-tzf")
        .arg(&archive)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.contains("member/wal/") && list.contains("member/snap/"),
        "{list}"
    );
    let (code, task) = env.run_action("etcd/0", &["defrag"]);
    assert_eq!(code, 0, "{task}");
    let out = etcdctl(&vars, &["get", "greeting", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");
}

/// Deletes the test keys, restores from `file` on the leader, and checks all 50 came back.
fn restore_from(env: &Env, vars: &[(String, String)], leader: &str, file: &Path, kind: &str) {
    assert!(etcdctl(vars, &["del", "/data/", "--prefix"])
        .status
        .success());
    let out = etcdctl(vars, &["get", "/data/", "--prefix", "--keys-only"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "the keys are gone before the restore"
    );
    env.ok(&[
        "attach-resource",
        "etcd",
        &format!("snapshot={}", file.display()),
    ]);
    env.settle("2m");
    let (code, task) = env.run_action(leader, &["restore"]);
    assert_eq!(code, 0, "{task}");
    assert!(
        task["results"]["restore"]["from"]
            .as_str()
            .unwrap()
            .contains(kind),
        "{task}"
    );
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", 3 * MIN);
    let out = etcdctl(vars, &["get", "/data/", "--prefix", "--keys-only"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .count(),
        50,
        "keys after restoring from {kind}"
    );
}

#[test]
fn snapshot_then_restore_brings_every_key_back_on_all_three_units() {
    let work = tempfile::tempdir().unwrap();
    let env = Env::new("restore", &["update-status-hook-interval=1h"]);
    deploy3(&env, work.path());
    let vars = credentials(&env, work.path());
    for i in 0..50 {
        let out = etcdctl(
            &vars,
            &["put", &format!("/data/{i:03}"), &format!("value-{i}")],
        );
        assert!(out.status.success());
    }
    let (code, task) = env.run_action("etcd/1", &["snapshot", "target=/root/snaps"]);
    assert_eq!(code, 0, "{task}");
    let r = &task["results"]["snapshot"];
    assert_eq!(r["version"], "3.5.1");
    let archive = env.machine_file("etcd/1", r["path"].as_str().unwrap());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&archive).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let local = work.path().join("snap.tar.gz");
    std::fs::copy(&archive, &local).unwrap();
    let sha = Command::new("sha256sum").arg(&local).output().unwrap();
    assert!(String::from_utf8_lossy(&sha.stdout).starts_with(r["sha256"].as_str().unwrap()));

    // Corrupt and truncated copies, and a restore on a non-leader, are refused; nothing changes.
    let bytes = std::fs::read(&local).unwrap();
    // A byte flipped mid-archive whose damage shows: a flip can leave deflate's output the
    // same (a code length of a symbol no block uses), and that archive is intact and rightly
    // restored (CI once flipped such a byte). The next byte is taken until the flip shows.
    let gunzip = |b: &[u8]| -> Option<Vec<u8>> {
        let mut out = vec![];
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(b), &mut out).ok()?;
        Some(out)
    };
    let content = gunzip(&bytes).unwrap();
    let flipped = (bytes.len() / 2..bytes.len() - 8)
        .map(|at| {
            let mut f = bytes.clone();
            f[at] ^= 0x01;
            f
        })
        .find(|f| gunzip(f).as_ref() != Some(&content))
        .unwrap();
    let bad = work.path().join("flipped.tar.gz");
    std::fs::write(&bad, &flipped).unwrap();
    let truncated = work.path().join("truncated.tar.gz");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    // The snapshot db itself (with its trailing sha256), one byte flipped inside a page: a
    // valid archive around a db whose digest does not match.
    let mut db = vec![];
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().file_name() == Some(std::ffi::OsStr::new("db")) {
            std::io::Read::read_to_end(&mut e, &mut db).unwrap();
        }
    }
    assert_eq!(db.len() % 512, 32, "the archive's db carries its digest");
    let page = db.len() / 2;
    db[page] ^= 0x01;
    let raw = work.path().join("flipped.db");
    std::fs::write(&raw, &db).unwrap();
    // The same db in a well-formed archive of this charm's layout (metadata.json, db): the
    // digest checked while it is unpacked refuses it.
    let repacked = work.path().join("repacked.tar.gz");
    {
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&repacked).unwrap(),
            flate2::Compression::fast(),
        );
        let mut t = tar::Builder::new(gz);
        for (name, data) in [("metadata.json", &b"{}"[..]), ("db", &db[..])] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            t.append_data(&mut h, name, data).unwrap();
        }
        t.into_inner().unwrap().finish().unwrap();
    }
    let leader = env.leader("etcd");
    for f in [&bad, &truncated, &raw, &repacked] {
        env.ok(&[
            "attach-resource",
            "etcd",
            &format!("snapshot={}", f.display()),
        ]);
        env.settle("2m");
        let (code, task) = env.run_action(&leader, &["restore"]);
        assert_eq!(
            code, 0,
            "a refusal is a failed task that exits 0, as on Juju 3.6"
        );
        assert_eq!(task["status"], "failed", "{task}");
        assert!(
            task["message"].as_str().unwrap().contains("refused")
                || task["message"]
                    .as_str()
                    .unwrap()
                    .contains("not an etcd snapshot"),
            "{task}"
        );
    }
    // A tarball with a `..` entry or a link is refused too.
    for (name, script) in [
        ("dotdot.tar.gz", "import tarfile,io,sys\nt=tarfile.open(sys.argv[1],'w:gz')\ni=tarfile.TarInfo('../evil');i.size=3;t.addfile(i,io.BytesIO(b'bad'));t.close()"),
        ("link.tar.gz", "import tarfile,sys\nt=tarfile.open(sys.argv[1],'w:gz')\ni=tarfile.TarInfo('db');i.type=tarfile.SYMTYPE;i.linkname='/etc/shadow';t.addfile(i);t.close()"),
    ] {
        let f = work.path().join(name);
        assert!(Command::new("/usr/bin/python3").args(["-c", script]).arg(&f).status().unwrap().success());
        env.ok(&["attach-resource", "etcd", &format!("snapshot={}", f.display())]);
        env.settle("2m");
        let (code, task) = env.run_action(&leader, &["restore"]);
        assert_eq!(code, 0, "a refusal is a failed task that exits 0, as on Juju 3.6");
        assert_eq!(task["status"], "failed", "{task}");
        assert!(task["message"].as_str().unwrap().contains("refused"), "{name}: {task}");
    }
    env.ok(&[
        "attach-resource",
        "etcd",
        &format!("snapshot={}", local.display()),
    ]);
    env.settle("2m");
    let follower = env
        .units("etcd")
        .into_iter()
        .find(|u| u != &leader)
        .unwrap();
    let (code, task) = env.run_action(&follower, &["restore"]);
    assert_eq!(
        code, 0,
        "a refusal is a failed task that exits 0, as on Juju 3.6"
    );
    assert_eq!(task["status"], "failed", "{task}");
    assert!(
        task["message"].as_str().unwrap().contains("leader"),
        "{task}"
    );
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", MIN);

    // Delete the keys, restore, and every key is back on all three units.
    let out = etcdctl(&vars, &["del", "/data/", "--prefix"]);
    assert!(out.status.success());
    let out = etcdctl(&vars, &["get", "/data/", "--prefix", "--keys-only"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "the keys are gone before the restore"
    );
    let (code, task) = env.run_action(&leader, &["restore"]);
    assert_eq!(code, 0, "{task}");
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", 3 * MIN);
    for u in env.units("etcd") {
        let ep = format!("https://{}:2379", env.address(&u));
        let out = etcdctl(
            &vars,
            &[
                "--endpoints",
                &ep,
                "get",
                "/data/",
                "--prefix",
                "--keys-only",
                "--consistency=s",
            ],
        );
        let n = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .count();
        assert_eq!(n, 50, "{u} has {n} of 50 keys after the restore");
    }

    // A raw `etcdctl snapshot save` file restores too.
    let raw = work.path().join("raw.db");
    let out = etcdctl(
        &vars,
        &[
            "--endpoints",
            &format!("https://{}:2379", env.address(&leader)),
            "snapshot",
            "save",
            raw.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    restore_from(&env, &vars, &leader, &raw, "raw");

    // A classic-format archive: the v3 db alone at the root of a tar.gz.
    let classic_dir = work.path().join("classic");
    std::fs::create_dir_all(&classic_dir).unwrap();
    std::fs::copy(
        &raw,
        classic_dir.join("etcd-snapshot-2025-01-01-00.00.00.db"),
    )
    .unwrap();
    let classic = work.path().join("classic.tar.gz");
    assert!(Command::new("tar")
        .arg("-czf")
        .arg(&classic)
        .arg("-C")
        .arg(&classic_dir)
        .arg(".")
        .status()
        .unwrap()
        .success());
    restore_from(&env, &vars, &leader, &classic, "classic");
    // M5: three restores, and each follower keeps the data of the cluster before the last
    // one only (`.epoch-<n>`), not one copy per restore.
    for u in env.units("etcd").iter().filter(|u| **u != leader) {
        let asides = env.exec_ok(u, "ls -d /var/lib/etcd/.epoch-* 2>/dev/null || true");
        assert_eq!(asides.lines().count(), 1, "{u}: {asides}");
    }
    assert_no_key_material_in_logs(&env);
}

#[test]
fn snap_upgrade_moves_a_debian_package_unit_to_the_archive_keeping_its_data_and_identity() {
    let work = tempfile::tempdir().unwrap();
    let env = Env::new("migrate", &["update-status-hook-interval=1h"]);
    let root = repo_root();
    // Two single-unit deployments from the Debian package: one migrates, the other is the witness.
    env.ok(&["deploy", root.to_str().unwrap(), "etcd"]);
    env.ok(&["deploy", root.to_str().unwrap(), "witness"]);
    env.wait_units("etcd", 1, "active", "Healthy with 1 known peers", 3 * MIN);
    env.wait_units(
        "witness",
        1,
        "active",
        "Healthy with 1 known peers",
        3 * MIN,
    );
    let vars = credentials(&env, work.path());
    for i in 0..20 {
        assert!(etcdctl(&vars, &["put", &format!("/m/{i:02}"), "v"])
            .status
            .success());
    }
    let member_id = || {
        let out = etcdctl(&vars, &["endpoint", "status", "-w", "json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0]["Status"]["header"]["member_id"].as_u64().unwrap()
    };
    let id = member_id();
    let exe = || running_etcd(&env, "etcd/0");
    assert_eq!(exe(), "/usr/bin/etcd");

    // Attaching a resource does not migrate by itself; the status says snap-upgrade is available.
    let tarball = etcd_tarball(work.path(), &etcd35(), "3.5.1");
    env.ok(&[
        "attach-resource",
        "etcd",
        &format!("etcd={}", tarball.display()),
    ]);
    env.wait_units(
        "etcd",
        1,
        "active",
        "Healthy with 1 known peers; snap-upgrade available",
        MIN,
    );
    assert_eq!(exe(), "/usr/bin/etcd");

    // A forced failure mid-way rolls back: the package's etcd runs with its data.
    env.exec_ok(
        "etcd/0",
        "mkdir -p /var/lib/etcd-charm/crashpoints && touch /var/lib/etcd-charm/crashpoints/verify",
    );
    let (code, task) = env.run_action("etcd/0", &["snap-upgrade", "target=/root/migration"]);
    assert_eq!(
        code, 0,
        "a refusal is a failed task that exits 0, as on Juju 3.6"
    );
    assert_eq!(task["status"], "failed", "{task}");
    assert!(
        task["message"].as_str().unwrap().contains("rolled back"),
        "{task}"
    );
    assert_eq!(exe(), "/usr/bin/etcd");
    env.exec_ok("etcd/0", "dpkg -s etcd-server | grep -q 'ok installed'");
    let out = etcdctl(&vars, &["get", "/m/", "--prefix", "--keys-only"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .count(),
        20
    );

    // The real migration.
    env.exec_ok("etcd/0", "rm -r /var/lib/etcd-charm/crashpoints");
    let (code, task) = env.run_action("etcd/0", &["snap-upgrade", "target=/root/migration"]);
    assert_eq!(code, 0, "{task}");
    assert_eq!(task["results"]["delivery"], "archive");
    assert!(exe().starts_with("/opt/etcd/3.5.1/"), "{}", exe());
    // The status says so at once (no hook follows an action): no more "snap-upgrade available".
    assert_eq!(
        workload(&env, "etcd/0"),
        (
            "active".to_string(),
            "Healthy with 1 known peers".to_string()
        )
    );
    assert_eq!(member_id(), id, "the member keeps its identity");
    let out = etcdctl(&vars, &["get", "/m/", "--prefix", "--keys-only"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .count(),
        20,
        "every key is there"
    );
    assert_ne!(
        env.exec(
            "etcd/0",
            "dpkg -s etcd-server 2>/dev/null | grep -q 'ok installed'"
        )
        .code,
        0,
        "the package is purged"
    );
    env.exec_ok("witness/0", "dpkg -s etcd-server | grep -q 'ok installed'");
    env.exec_ok("etcd/0", "test -s /root/migration/etcd-pre-migration.tar.gz && test -s /root/migration/etcd-pre-migration.db");
    // M9: the backup holds every private key: 0600 (it was 0644 while tar wrote it).
    assert_eq!(
        env.exec_ok(
            "etcd/0",
            "stat -c %a /root/migration/etcd-pre-migration.tar.gz"
        )
        .trim(),
        "600"
    );
    env.ok(&["run", "etcd/0", "health"]);
}

/// A unit's workload status and message, as `status` shows them now.
fn workload(env: &Env, unit: &str) -> (String, String) {
    let w = &unit_entry(&env.status(), unit)["workload-status"];
    (
        w["current"].as_str().unwrap_or_default().to_string(),
        w["message"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn a_restore_killed_mid_swap_is_undone_by_the_next_hook_and_can_run_again() {
    let work = tempfile::tempdir().unwrap();
    let env = Env::new("restorekill", &["update-status-hook-interval=1h"]);
    let tarball = etcd_tarball(work.path(), &etcd35(), "3.5.1");
    deploy_healthy(&env, 1, &tarball, &[]);
    let vars = credentials(&env, work.path());
    let keys = |prefix: &str| {
        let out = etcdctl(&vars, &["get", prefix, "--prefix", "--keys-only"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .count()
    };
    for i in 0..10 {
        assert!(etcdctl(&vars, &["put", &format!("/old/{i}"), "v"])
            .status
            .success());
    }
    let (code, task) = env.run_action("etcd/0", &["snapshot", "target=/root/snaps"]);
    assert_eq!(code, 0, "{task}");
    let archive = env.machine_file(
        "etcd/0",
        task["results"]["snapshot"]["path"].as_str().unwrap(),
    );
    let local = work.path().join("snap.tar.gz");
    std::fs::copy(&archive, &local).unwrap();
    // Written after the snapshot: present in the original data only.
    assert!(etcdctl(&vars, &["put", "/after-snapshot", "v"])
        .status
        .success());
    env.ok(&[
        "attach-resource",
        "etcd",
        &format!("snapshot={}", local.display()),
    ]);
    env.settle("2m");

    // etcd cannot be stopped (systemctl fails): the restore stops there and moves nothing.
    env.exec_ok(
        "etcd/0",
        "printf '#!/bin/sh\\ncase \"$*\" in *stop*etcd*) echo \"Failed to stop etcd.service: Transaction is destructive.\" >&2; exit 1;; esac\\nexec /usr/bin/systemctl \"$@\"\\n' > /usr/local/sbin/systemctl && chmod 755 /usr/local/sbin/systemctl",
    );
    let (code, task) = env.run_action("etcd/0", &["restore"]);
    assert_eq!(
        code, 0,
        "a refusal is a failed task that exits 0, as on Juju 3.6"
    );
    assert_eq!(task["status"], "failed", "{task}");
    assert!(
        task.to_string().contains("Failed to stop etcd.service"),
        "the failure says why: {task}"
    );
    env.exec_ok(
        "etcd/0",
        "rm /usr/local/sbin/systemctl && test -e /var/lib/etcd/member/wal && test ! -e /var/lib/etcd-charm/txn.json",
    );
    assert_eq!(keys("/after-snapshot"), 1, "the original data still serves");
    assert_eq!(
        workload(&env, "etcd/0"),
        (
            "active".to_string(),
            "Healthy with 1 known peers".to_string()
        ),
        "the failed action says the member is healthy again"
    );

    // The action is SIGKILLed with the original data set aside and nothing in its place.
    env.crash_at("etcd/0", "restore-aside");
    let (code, _) = env.run_action("etcd/0", &["restore"]);
    assert_ne!(code, 0, "the killed restore fails");
    env.exec_ok(
        "etcd/0",
        "test ! -e /var/lib/etcd/member && test -e /var/lib/etcd-charm/txn.json",
    );
    // Its status says what the member is in (it said "Healthy" with etcd stopped before).
    assert_eq!(
        workload(&env, "etcd/0"),
        (
            "maintenance".to_string(),
            "Restoring the cluster from the snapshot resource (restore action)".to_string()
        )
    );
    // The next hook puts the original back: the key written after the snapshot is there.
    env.ok(&["model-config", "update-status-hook-interval=2s"]);
    env.wait("the original data back", 2 * MIN, |_| {
        keys("/after-snapshot") == 1
    });
    env.exec_ok("etcd/0", "test ! -e /var/lib/etcd-charm/txn.json");
    // The hook that put it back found etcd stopped (the killed action had stopped it) and
    // started it; the next one sees it healthy. Waited for here, while hooks still come
    // every 2 s: no hook follows an action by itself.
    env.wait_units("etcd", 1, "active", "Healthy with 1 known peers", 2 * MIN);
    env.ok(&["model-config", "update-status-hook-interval=1h"]);
    assert_eq!(keys("/old/"), 10);

    // M3: killed once the restored member runs, before it is proven. The next hook undoes
    // the swap, so the member serves clients on loopback only until then: no client's write
    // is acknowledged there and then undone.
    env.crash_at("etcd/0", "restore-started");
    let (code, _) = env.run_action("etcd/0", &["restore"]);
    assert_ne!(code, 0, "the killed restore fails");
    until("the unproven member to answer on loopback", MIN, || {
        support::etcd::healthy_on_loopback(&env, "etcd/0")
    });
    env.exec_ok("etcd/0", "test -e /var/lib/etcd-charm/txn.json");
    let out = etcdctl(&vars, &["put", "/while-unproven", "v"]);
    assert!(
        !out.status.success(),
        "a client's write to the unproven restored member was acknowledged"
    );
    env.ok(&["model-config", "update-status-hook-interval=2s"]);
    env.wait("the original data back again", 2 * MIN, |_| {
        keys("/after-snapshot") == 1
    });
    env.wait_units("etcd", 1, "active", "Healthy with 1 known peers", 2 * MIN);
    env.ok(&["model-config", "update-status-hook-interval=1h"]);
    assert_eq!(keys("/old/"), 10);

    // Run again: the snapshot's state, and the original data was never deleted on the way.
    // No hook follows an action: the action itself reports the member's health at its end
    // (whatever status was on show before it, here one set by hand).
    env.exec_ok("etcd/0", "status-set blocked 'set by the test'");
    let (code, task) = env.run_action("etcd/0", &["restore"]);
    assert_eq!(code, 0, "{task}");
    assert_eq!(
        workload(&env, "etcd/0"),
        (
            "active".to_string(),
            "Healthy with 1 known peers".to_string()
        )
    );
    assert_eq!(keys("/old/"), 10);
    assert_eq!(keys("/after-snapshot"), 0, "the snapshot's state");
    // Once the restored member is proven, the old data, the unpacked snapshot and the
    // offline restore's leftovers go (after the action answered): only the member is left.
    env.wait("the data directory holds the member alone", MIN, |_| {
        env.exec_ok("etcd/0", "ls -A /var/lib/etcd").trim() == "member"
    });
}

/// A 1 GiB database (1024 values of 1 MiB of random bytes) through the snapshot action and
/// back through the restore action on one unit: every key comes back with its value (a
/// digest over all values, taken inside the unit before and after), and the archive's
/// sha256 in the results is the file's.
#[test]
fn a_one_gib_database_snapshots_and_restores_with_every_key() {
    let work = tempfile::tempdir().unwrap();
    let env = Env::new("big", &["update-status-hook-interval=1h"]);
    let tarball = etcd_tarball(work.path(), &etcd35(), "3.5.1");
    deploy_healthy(
        &env,
        1,
        &tarball,
        &["--config", "quota_backend_bytes=4294967296"],
    );
    let ep = format!("https://{}:2379", env.address("etcd/0"));
    let ctl = format!(
        "{} --endpoints={ep} --cacert=/etc/etcd/pki/ca.crt --cert=/etc/etcd/pki/client.crt \
         --key=/etc/etcd/pki/client.key",
        etcd35().join("etcdctl").display()
    );
    // The values are written and digested inside the unit (no GiB through the test).
    let digest = |what: &str| -> String {
        let out = env.exec_ok(
            "etcd/0",
            &format!(
                "set -e; n=$({ctl} get /big/ --prefix --keys-only | grep -c .); \
                 h=$(for i in $(seq -w 0 1023); do {ctl} get /big/$i --print-value-only; done | sha256sum); \
                 echo $n $h"
            ),
        );
        let f: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(f.first().copied(), Some("1024"), "{what}: {out}");
        f[1].to_string()
    };
    env.exec_ok(
        "etcd/0",
        &format!(
            "set -e; for i in $(seq -w 0 1023); do head -c 1048576 /dev/urandom | {ctl} put /big/$i >/dev/null; done"
        ),
    );
    let before = digest("before the snapshot");
    let (code, task) = env.run_action("etcd/0", &["snapshot", "target=/root/snaps"]);
    assert_eq!(code, 0, "{task}");
    let r = &task["results"]["snapshot"];
    let path = r["path"].as_str().unwrap().to_string();
    let on_unit = env.exec_ok("etcd/0", &format!("sha256sum {path} | cut -d' ' -f1"));
    assert_eq!(on_unit.trim(), r["sha256"].as_str().unwrap());
    let local = work.path().join("big.tar.gz");
    std::fs::copy(env.machine_file("etcd/0", &path), &local).unwrap();
    env.exec_ok("etcd/0", &format!("rm {path}"));
    assert!(env
        .exec(
            "etcd/0",
            &format!("{ctl} del /big/ --prefix && {ctl} compact $({ctl} endpoint status -w json | sed 's/.*\"revision\":\\([0-9]*\\).*/\\1/')"),
        )
        .code
        == 0);
    env.ok(&[
        "attach-resource",
        "etcd",
        &format!("snapshot={}", local.display()),
    ]);
    env.settle("3m");
    let (code, task) = env.run_action("etcd/0", &["restore"]);
    assert_eq!(code, 0, "{task}");
    env.wait_units("etcd", 1, "active", "Healthy with 1 known peers", 2 * MIN);
    assert_eq!(
        digest("after the restore"),
        before,
        "every value of the 1 GiB database comes back"
    );
}
