//! Off-machine backups: scheduled snapshots uploaded to the bucket `s3-credentials` shares,
//! read back before they are recorded, pruned to `s3_retention`, listed, and a cluster
//! rebuilt from the bucket alone. The bucket is a real S3 server (SeaweedFS) on the probe
//! charm's machine; what is in it is checked with an independent client (Debian's s3cmd).

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use support::etcd::*;
use support::*;

const BUCKET: &str = "etcd-backups";
const PATH: &str = "etcd/prod";

/// s3cmd (Debian's) against the probe's server, with the probe's credentials.
struct S3cmd {
    cfg: tempfile::NamedTempFile,
}

impl S3cmd {
    fn new(env: &Env, https_ca: Option<&Path>) -> S3cmd {
        let addr = env.address("s3-probe/0");
        let (port, https) = if https_ca.is_some() {
            (8334, "True")
        } else {
            (8333, "False")
        };
        let mut text = format!(
            "[default]\naccess_key = etcd-access\nsecret_key = etcd-secret-key-0123456789\n\
             host_base = {addr}:{port}\nhost_bucket = {addr}:{port}\nuse_https = {https}\n\
             signature_v2 = False\nbucket_location = us-east-1\n"
        );
        if let Some(ca) = https_ca {
            text.push_str(&format!(
                "ca_certs_file = {}\ncheck_ssl_certificate = True\n",
                ca.display()
            ));
        }
        let cfg = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(cfg.path(), text).unwrap();
        S3cmd { cfg }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("s3cmd")
            .arg("-c")
            .arg(self.cfg.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "s3cmd {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The objects under the probe's path: (name, size).
    fn list(&self) -> Vec<(String, u64)> {
        let prefix = format!("s3://{BUCKET}/{PATH}/");
        self.run(&["ls", &prefix])
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let name = f.last()?.strip_prefix(&prefix)?;
                Some((name.to_string(), f.get(2)?.parse().ok()?))
            })
            .collect()
    }

    fn get(&self, name: &str, to: &Path) {
        self.run(&[
            "get",
            "--force",
            &format!("s3://{BUCKET}/{PATH}/{name}"),
            to.to_str().unwrap(),
        ]);
    }
}

/// The records in the bucket, read with s3cmd: every one names an archive of its size.
fn records(s3: &S3cmd, dir: &Path) -> Vec<Value> {
    let objects = s3.list();
    let mut out = vec![];
    for (name, _) in objects.iter().filter(|(n, _)| n.ends_with(".json")) {
        let p = dir.join(name);
        s3.get(name, &p);
        let r: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        let archive = r["object"].as_str().unwrap();
        let size = objects.iter().find(|(n, _)| n == archive).map(|(_, s)| *s);
        assert_eq!(
            size,
            r["size"].as_u64(),
            "the record {name} names {archive} of its size"
        );
        out.push(r);
    }
    out.sort_by_key(|r| r["id"].as_str().unwrap_or_default().to_string());
    out
}

fn sha256(p: &Path) -> String {
    let out = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The keys under `prefix` etcdctl sees at `endpoints`.
fn keys(creds: &Creds, endpoints: &str, prefix: &str) -> Vec<String> {
    let out = creds.etcdctl(endpoints, true, &["get", "--prefix", prefix, "--keys-only"]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn offsite_record(env: &Env, unit: &str) -> Value {
    let r = env.exec(unit, "cat /var/lib/etcd-charm/offsite-record.json");
    serde_json::from_str(&r.stdout).unwrap_or(Value::Null)
}

fn taker(env: &Env) -> Option<String> {
    env.units("etcd").into_iter().find(|u| {
        env.exec(u, "systemctl is-active --quiet etcd-charm-snapshot.timer")
            .code
            == 0
    })
}

#[test]
fn scheduled_snapshots_reach_the_bucket_verified_pruned_and_rebuild_a_cluster() {
    let work = tempfile::tempdir().unwrap();
    let env = Env::new("offsite", &["update-status-hook-interval=5s"]);
    let tarball = etcd_tarball(work.path(), &etcd_build("3.5.16"), "3.5.16");
    deploy_healthy(&env, 3, &tarball, &[]);
    let probe = repo_root().join("tests/charms/s3-probe");
    env.ok(&["deploy", probe.to_str().unwrap()]);
    env.ok(&[
        "integrate",
        "etcd:s3-credentials",
        "s3-probe:s3-credentials",
    ]);
    let creds = Creds::from_unit(&env, "etcd/0");
    let eps = endpoints(&env);
    for i in 0..40 {
        let out = creds.etcdctl(
            &eps,
            true,
            &["put", &format!("/data/{i:03}"), &format!("value-{i}")],
        );
        assert!(out.status.success(), "{out:?}");
    }

    // An age identity kept off the cluster: the charm gets its public key only.
    let key = work.path().join("age.key");
    let kg = Command::new("age-keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .unwrap();
    assert!(kg.status.success(), "{kg:?}");
    let public = String::from_utf8_lossy(&kg.stderr)
        .trim()
        .strip_prefix("Public key: ")
        .unwrap()
        .to_string();
    let identity = std::fs::read_to_string(&key)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap()
        .to_string();
    // A private key given where the public one belongs is refused, and not repeated.
    env.ok(&[
        "config",
        "etcd",
        &format!("backup_age_recipients={identity}"),
    ]);
    env.wait("the identity refused as a recipient", MIN, |s| {
        unit_message(s, "etcd/0").contains("that is an identity, a private key")
    });
    assert!(!env.ok(&["status", "--format", "json"]).contains(&identity));
    env.ok(&["config", "etcd", &format!("backup_age_recipients={public}")]);
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", MIN);

    // Every 12 s, the bucket keeping two: each upload encrypted, read back and recorded.
    env.ok(&[
        "config",
        "etcd",
        "snapshot_schedule=12s",
        "snapshot_retention=5",
        "s3_retention=2",
    ]);
    until("a unit to take the scheduled snapshots", 2 * MIN, || {
        taker(&env).is_some()
    });
    let taker = taker(&env).unwrap();
    until("three uploads", 3 * MIN, || uploads(&env, &taker) >= 3);
    let s3 = S3cmd::new(&env, None);
    let recs = records(&s3, work.path());
    assert_eq!(recs.len(), 2, "pruned to s3_retention: {recs:?}");
    // The newest, read with s3cmd: ciphertext whose sha256 is the record's; Debian's age
    // opens it with the identity into the archive, whose db holds the keys.
    let newest = recs.last().unwrap();
    assert_eq!(newest["encrypted"], true, "{newest}");
    let sealed = work.path().join("newest.tar.gz.age");
    s3.get(newest["object"].as_str().unwrap(), &sealed);
    assert_eq!(sha256(&sealed), newest["sha256"].as_str().unwrap());
    assert!(std::fs::read(&sealed)
        .unwrap()
        .starts_with(b"age-encryption.org/v1"));
    let got = work.path().join("newest.tar.gz");
    let dec = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&key)
        .arg("-o")
        .arg(&got)
        .arg(&sealed)
        .output()
        .unwrap();
    assert!(dec.status.success(), "{dec:?}");
    assert_eq!(sha256(&got), newest["archive_sha256"].as_str().unwrap());
    let unpacked = work.path().join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    let tar = Command::new("tar")
        .arg("-xzf")
        .arg(&got)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(tar.success());
    let st = Command::new(etcd_build("3.5.16").join("etcdutl"))
        .args(["snapshot", "status", "-w", "json"])
        .arg(unpacked.join("db"))
        .output()
        .unwrap();
    let st: Value = serde_json::from_slice(&st.stdout).unwrap();
    assert!(st["totalKey"].as_u64().unwrap_or(0) >= 40, "{st}");
    env.wait("status to show the last off-machine backup", MIN, |s| {
        unit_message(s, &taker).contains("last off-machine backup")
    });

    // list-backups shows both places; snapshot upload=true records one more.
    let (code, task) = env.run_action(&taker, &["list-backups"]);
    assert_eq!(code, 0, "{task}");
    assert_eq!(task["results"]["remote"]["count"], "2", "{task}");
    // The schedule runs every 12 s and a snapshot's id is its second (the classic charm's
    // name): one named for the same second as a scheduled one is refused, nothing
    // overwritten. That alone may happen, and a next try names another second.
    let mut uploaded = None;
    for _ in 0..3 {
        let (code, task) = env.run_action("etcd/0", &["snapshot", "upload=true"]);
        assert_eq!(code, 0, "{task}");
        if let Some(id) = task["results"]["upload"]["id"].as_str() {
            uploaded = Some(id.to_string());
            break;
        }
        assert!(
            task.to_string()
                .contains("is already in the bucket: not overwritten"),
            "no upload id in {task}"
        );
    }
    let id = uploaded.expect("an upload within three tries");
    assert!(
        s3.list().iter().any(|(n, _)| *n == format!("{id}.json")),
        "{id} recorded"
    );

    faults_are_named_and_record_nothing(&env, &taker, &s3, work.path());

    // The cluster is gone; a new application related to the same bucket rebuilds it from
    // the bucket alone.
    env.ok(&["config", "etcd", "snapshot_schedule="]);
    let (_, task) = env.run_action(&taker, &["list-backups"]);
    let backups: Vec<Value> =
        serde_json::from_str(task["results"]["backups"].as_str().unwrap()).unwrap();
    let last = backups
        .iter()
        .rev()
        .find(|b| b["place"] == "bucket")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.ok(&["remove-application", "etcd"]);
    let res = format!("etcd={}", tarball.display());
    env.ok(&[
        "deploy",
        repo_root().to_str().unwrap(),
        "rebuilt",
        "--resource",
        &res,
    ]);
    env.wait_units(
        "rebuilt",
        1,
        "active",
        "Healthy with 1 known peers",
        3 * MIN,
    );
    env.ok(&[
        "integrate",
        "rebuilt:s3-credentials",
        "s3-probe:s3-credentials",
    ]);
    let new_eps = unit_endpoint(&env, "rebuilt/0");
    let new_creds = Creds::from_unit(&env, "rebuilt/0");
    assert!(keys(&new_creds, &new_eps, "/data/").is_empty());
    until("the new application to see the bucket", 2 * MIN, || {
        let (_, t) = env.run_action("rebuilt/0", &["list-backups"]);
        t["results"]["remote"]["count"]
            .as_str()
            .is_some_and(|c| c != "0")
    });
    // Encrypted: refused until the identity comes in a Juju secret granted to the application.
    let (_, task) = env.run_action("rebuilt/0", &["restore", &format!("backup-id={last}")]);
    assert_refused(
        &task,
        "is encrypted: give the charm its age identity in a Juju secret",
    );
    // A user secret as Juju 3.6 makes it (cmd/juju/secrets/add.go, grant.go: model-owned,
    // readable by the applications granted), named by a config option of type secret
    // (apiserver/facades/client/application/application.go, validateSecretConfig).
    let uri = env
        .ok(&["add-secret", "etcd-age", &format!("identity={identity}")])
        .trim()
        .to_string();
    env.ok(&["config", "rebuilt", &format!("backup_age_identity={uri}")]);
    let (_, task) = env.run_action("rebuilt/0", &["restore", &format!("backup-id={last}")]);
    assert_refused(&task, "was it granted to this application");
    env.ok(&["grant-secret", "etcd-age", "rebuilt"]);
    let (code, task) = env.run_action("rebuilt/0", &["restore", &format!("backup-id={last}")]);
    assert_eq!(code, 0, "{task}");
    assert_eq!(task["status"], "completed", "{task}");
    env.wait_units(
        "rebuilt",
        1,
        "active",
        "Healthy with 1 known peers",
        2 * MIN,
    );
    assert_eq!(
        keys(&new_creds, &new_eps, "/data/").len(),
        40,
        "every key back"
    );
    let log = env.ok(&["debug-log", "--limit", "1000000", "--level", "DEBUG"]);
    assert!(!log.contains(&identity), "the age identity is in the log");
    // An id the bucket does not have is refused before anything is touched.
    let (_, task) = env.run_action(
        "rebuilt/0",
        &["restore", "backup-id=etcd-snapshot-1999-01-01-00.00.00"],
    );
    assert_refused(
        &task,
        "there is no backup etcd-snapshot-1999-01-01-00.00.00",
    );
    assert_eq!(keys(&new_creds, &new_eps, "/data/").len(), 40);
}

/// How many uploads the taker's job read back and recorded.
fn uploads(env: &Env, unit: &str) -> u64 {
    offsite_record(env, unit)["uploaded"].as_u64().unwrap_or(0)
}

/// Refused credentials, a missing bucket and a stopped server: each named in the taker's
/// status; the bucket gains no record meanwhile and every record names a whole archive.
fn faults_are_named_and_record_nothing(env: &Env, taker: &str, s3: &S3cmd, dir: &Path) {
    let before = records(s3, dir).len();
    for (config, says) in [
        (
            "shared-secret-key=not-the-key",
            "the S3 credentials are refused",
        ),
        (
            "shared-bucket=no-such-bucket",
            "the bucket \"no-such-bucket\" does not exist",
        ),
    ] {
        env.ok(&["config", "s3-probe", config]);
        env.wait(&format!("the taker to say {says}"), 2 * MIN, |s| {
            unit_message(s, taker).contains(says)
        });
        let key = config.split('=').next().unwrap();
        env.ok(&["config", "s3-probe", &format!("{key}=")]);
    }
    assert_eq!(records(s3, dir).len(), before, "no record while refused");
    env.exec_ok("s3-probe/0", "systemctl stop s3-probe-weed");
    env.wait(
        "the taker to say the endpoint is unreachable",
        2 * MIN,
        |s| unit_message(s, taker).contains("cannot be reached"),
    );
    env.exec_ok("s3-probe/0", "systemctl start s3-probe-weed");
    let failed_at = offsite_record(env, taker)["last_attempt"].as_i64().unwrap();
    until("an upload after the server is back", 2 * MIN, || {
        offsite_record(env, taker)["last_ok"]
            .as_i64()
            .is_some_and(|ok| ok > failed_at)
    });
    // records() asserts every record names an archive of its size.
    assert!(!records(s3, dir).is_empty());
}

/// A provider that shares the credentials in a Juju secret (interface v1) and serves HTTPS
/// with a CA of its own, shared as `tls-ca-chain`: the upload trusts that CA and nothing
/// else, and the object is the archive the action wrote.
#[test]
fn a_v1_provider_over_https_with_its_own_ca() {
    let work = tempfile::tempdir().unwrap();
    let env = Env::new("offsite-v1", &["update-status-hook-interval=1h"]);
    deploy_healthy(&env, 1, &etcd_tarball(work.path(), &etcd35(), "3.5.1"), &[]);
    let probe = repo_root().join("tests/charms/s3-probe");
    // The probe adds its credentials' secret and grants it in the same hook, as Juju allows
    // (internal/worker/uniter/runner/context/context.go: GrantSecret looks the secret up in
    // SecretMetadata, which includes the hook's pending creates).
    env.ok(&[
        "deploy",
        probe.to_str().unwrap(),
        "--config",
        "protocol=v1",
        "--config",
        "tls=true",
    ]);
    env.ok(&[
        "integrate",
        "etcd:s3-credentials",
        "s3-probe:s3-credentials",
    ]);
    let mut last = Value::Null;
    let shared = std::time::Instant::now() + 2 * MIN;
    while last["status"] != "completed" {
        assert!(
            std::time::Instant::now() < shared,
            "the provider did not share its bucket: {last} {}",
            env.ok(&["debug-log", "--limit", "60", "--include", "s3-probe/0"])
        );
        last = env.run_action("etcd/0", &["list-backups"]).1;
    }
    let creds = Creds::from_unit(&env, "etcd/0");
    for i in 0..5 {
        let out = creds.etcdctl(&endpoints(&env), true, &["put", &format!("/v1/{i}"), "x"]);
        assert!(out.status.success(), "{out:?}");
    }
    let (code, task) = env.run_action("etcd/0", &["snapshot", "upload=true"]);
    assert_eq!(code, 0, "{task}");
    assert_eq!(task["status"], "completed", "{task}");
    let up = &task["results"]["upload"];
    let ca = work.path().join("s3-ca.pem");
    std::fs::write(
        &ca,
        env.exec_ok("s3-probe/0", "cat /var/lib/s3-probe/ca.pem"),
    )
    .unwrap();
    let s3 = S3cmd::new(&env, Some(&ca));
    let got = work.path().join("up.tar.gz");
    s3.get(&format!("{}.tar.gz", up["id"].as_str().unwrap()), &got);
    assert_eq!(sha256(&got), up["sha256"].as_str().unwrap());
    let local = env.machine_file(
        "etcd/0",
        task["results"]["snapshot"]["path"].as_str().unwrap(),
    );
    assert_eq!(
        sha256(&local),
        sha256(&got),
        "the object is the archive written"
    );
    // verify-backup starts it in a scratch member and finds what its record says; a record
    // that says otherwise (one key more) is caught.
    let id = up["id"].as_str().unwrap();
    let (code, task) = env.run_action("etcd/0", &["verify-backup", &format!("backup-id={id}")]);
    assert_eq!(code, 0, "{task}");
    assert_eq!(task["status"], "completed", "{task}");
    let rec_path = work.path().join("rec.json");
    s3.get(&format!("{id}.json"), &rec_path);
    let mut rec: Value = serde_json::from_slice(&std::fs::read(&rec_path).unwrap()).unwrap();
    let keys = rec["keys"].as_u64().unwrap();
    assert_eq!(keys, 5, "{rec}");
    assert_eq!(
        task["results"]["verify"]["keys"],
        keys.to_string(),
        "{task}"
    );
    rec["keys"] = (keys + 1).into();
    std::fs::write(&rec_path, rec.to_string()).unwrap();
    s3.run(&[
        "put",
        rec_path.to_str().unwrap(),
        &format!("s3://{BUCKET}/{PATH}/{id}.json"),
    ]);
    let (_, task) = env.run_action("etcd/0", &["verify-backup", &format!("backup-id={id}")]);
    assert_refused(&task, &format!("its record says {}", keys + 1));
    assert!(
        env.exec(
            "etcd/0",
            "ls -d /var/lib/etcd/.verify-* /media/etcd/data/.verify-* 2>/dev/null"
        )
        .stdout
        .trim()
        .is_empty(),
        "the scratch member's files are gone"
    );
    assert!(env
        .exec("etcd/0", "pgrep -f 'config-file [^ ]*[.]verify-' || true")
        .stdout
        .trim()
        .is_empty());
    // The secret key stays out of the logs and the action's output, and the unit keeps no
    // copy of it (only the unit that takes scheduled snapshots keeps a private plan).
    let log = env.ok(&["debug-log", "--limit", "1000000", "--level", "DEBUG"]);
    assert!(
        !log.contains("etcd-secret-key-0123456789"),
        "the secret key is in the log"
    );
    assert!(!task.to_string().contains("etcd-secret-key-0123456789"));
    assert!(
        env.exec("etcd/0", "test -e /var/lib/etcd-charm/offsite-plan.json")
            .code
            != 0
    );
}
