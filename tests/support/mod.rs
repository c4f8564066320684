//! Test support shared by the charm's and the harness's integration tests: every test gets
//! its own controller (its own home, bridge and machines), torn down when it ends.
#![allow(dead_code)]

pub mod etcd;
pub mod tarball;
#[allow(unused_imports)] // not every test crate builds tarballs
pub use tarball::etcd_tarball;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The workspace's target dir for this profile (where the test binary's deps dir lives).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

pub fn harness_bin() -> PathBuf {
    let p = target_dir().join("charm-harness");
    assert!(
        p.exists(),
        "{} missing: build the workspace first (cargo build --release --workspace)",
        p.display()
    );
    p
}

pub fn repo_root() -> PathBuf {
    let mut p = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !p.join("metadata.yaml").exists() || !p.join("harness").exists() {
        p = p.parent().expect("repository root").to_path_buf();
    }
    p
}

/// The local controller's charm store for the tests: `etcd` (this repository), `easyrsa`
/// and the test charms by name, as links in one directory (`deploy etcd` finds them there).
pub fn charmhub() -> PathBuf {
    static STORE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    // Once per test process: parallel tests of one binary share it, and test binaries running
    // at the same time each write their links under a name of their own, then rename.
    STORE
        .get_or_init(|| {
            let dir = target_dir().join("charmhub");
            std::fs::create_dir_all(&dir).unwrap();
            let root = repo_root();
            for (name, src) in [
                ("etcd", root.clone()),
                ("etcd-client", root.join("tests/charms/etcd-client")),
                ("easyrsa", packed_easyrsa(&dir)),
                ("tls-probe", root.join("tests/charms/tls-probe")),
                ("tls-v4-probe", root.join("tests/charms/tls-v4-probe")),
                (
                    "etcd-client-probe",
                    root.join("tests/charms/etcd-client-probe"),
                ),
                ("cos-probe", root.join("tests/charms/cos-probe")),
                ("probe", root.join("tests/charms/probe")),
            ] {
                let link = dir.join(name);
                if std::fs::read_link(&link).ok().as_deref() != Some(src.as_path()) {
                    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
                    let _ = std::fs::remove_file(&tmp); // a leftover of an earlier run with this PID
                    std::os::unix::fs::symlink(&src, &tmp).unwrap();
                    std::fs::rename(&tmp, &link).unwrap();
                }
            }
            dir
        })
        .clone()
}

pub fn fixtures() -> PathBuf {
    PathBuf::from(
        std::env::var("ETCD_CHARM_FIXTURES")
            .unwrap_or_else(|_| "/var/cache/etcd-charm-test".into()),
    )
}

/// A unit's workload status message in `status --format json`.
/// An action task that failed, its message saying `says`.
pub fn assert_refused(task: &Value, says: &str) {
    assert_eq!(task["status"], "failed", "{task}");
    assert!(
        task["message"].as_str().unwrap_or("").contains(says),
        "the refusal says {says:?}: {task}"
    );
}

pub fn unit_message(status: &Value, unit: &str) -> String {
    unit_entry(status, unit)["workload-status"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// A unit's entry in a status: under its application, or (a subordinate) under its
/// principal's `subordinates`, as Juju nests them. Null when it is not there.
pub fn unit_entry(status: &Value, unit: &str) -> Value {
    let app = unit.split('/').next().unwrap_or("");
    let direct = &status["applications"][app]["units"][unit];
    if !direct.is_null() {
        return direct.clone();
    }
    for a in status["applications"].as_object().into_iter().flatten() {
        for u in a.1["units"].as_object().into_iter().flatten() {
            let nested = &u.1["subordinates"][unit];
            if !nested.is_null() {
                return nested.clone();
            }
        }
    }
    Value::Null
}

/// The units of `app` in a status, in unit-number order.
pub fn units_of(status: &Value, app: &str) -> Vec<String> {
    let mut v: Vec<String> = status["applications"][app]["units"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    v.sort_by_key(|u| {
        u.rsplit('/')
            .next()
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    });
    v
}

/// The binary the unit's systemd-run etcd was started from.
pub fn running_etcd(env: &Env, unit: &str) -> String {
    env.exec_ok(
        unit,
        "readlink /proc/$(systemctl show -p MainPID --value etcd.service)/exe",
    )
    .trim()
    .to_string()
}

/// The machines' apt mirror that tests/setup.sh indexes.
pub fn apt_mirror() -> String {
    format!("file:{}", fixtures().join("archive").display())
}

pub struct Env {
    pub home: tempfile::TempDir,
    pub model: String,
    bin: PathBuf,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Env {
    /// A fresh controller with one model. `config` are model-config settings.
    pub fn new(model: &str, config: &[&str]) -> Env {
        let home = tempfile::Builder::new()
            .prefix("harness-test-")
            .tempdir_in("/tmp")
            .unwrap();
        let env = Env {
            home,
            model: model.to_string(),
            bin: harness_bin(),
        };
        env.ok(&["add-model", "--no-switch", model]);
        let mut args = vec!["model-config"];
        args.extend(config);
        // Tests reach units from the host (etcdctl, writers): no cloud firewall unless the
        // test is about it and asks for `firewall-mode=instance`, the controller's default.
        if !config.iter().any(|c| c.starts_with("firewall-mode=")) {
            args.push("firewall-mode=none");
        }
        env.ok(&args);
        env
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("CHARM_HARNESS_HOME", self.home.path())
            .env("JUJU_MODEL", &self.model)
            .env("CHARM_HARNESS_APT_MIRROR", apt_mirror())
            .env("CHARM_HARNESS_SNAP_SEED", fixtures().join("seed"))
            .env("CHARM_HARNESS_CHARMHUB", charmhub());
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.cmd()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
            .into()
    }

    /// Runs a command as a Juju 2.9 client types it (`CHARM_HARNESS_CLIENT=2.9`: its
    /// `run-action`, `show-action-output`, `attach`, `upgrade-charm`, `add-relation`).
    pub fn run29(&self, args: &[&str]) -> Run {
        self.cmd()
            .env("CHARM_HARNESS_CLIENT", "2.9")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
            .into()
    }

    /// `run29` of a command that must succeed; returns its stdout.
    pub fn ok29(&self, args: &[&str]) -> String {
        let r = self.run29(args);
        assert_eq!(
            r.code, 0,
            "charm-harness {args:?} (a 2.9 client): {}{}",
            r.stdout, r.stderr
        );
        r.stdout
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        if r.code != 0 {
            // What the controller said about itself (its start, a crash) goes with the failure.
            let log = std::fs::read_to_string(self.home.path().join("controller.log"))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "charm-harness {args:?} failed (exit {}):\n{}{}\n--- controller.log (last 40 lines) ---\n{}",
                r.code,
                r.stdout,
                r.stderr,
                tail.join("\n")
            );
        }
        r.stdout
    }

    pub fn status(&self) -> Value {
        serde_json::from_str(&self.ok(&["status", "--format", "json"])).unwrap()
    }

    /// Polls status until `cond` holds; panics with the status table after `timeout`.
    pub fn wait(&self, what: &str, timeout: Duration, cond: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status();
            if cond(&s) {
                return s;
            }
            if Instant::now() > deadline {
                let log = self.run(&["debug-log", "--limit", "200"]).stdout;
                let log: String = log
                    .lines()
                    .filter(|l| !l.contains(" DEBUG "))
                    .map(|l| format!("{l}\n"))
                    .collect();
                panic!(
                    "timed out waiting for {what}\n{}\n--- debug-log ---\n{log}",
                    self.ok(&["status"])
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every unit of `app` (exactly `n` of them) shows `workload` and is idle.
    pub fn wait_units(
        &self,
        app: &str,
        n: usize,
        workload: &str,
        msg_prefix: &str,
        timeout: Duration,
    ) -> Value {
        self.wait(
            &format!("{n} units of {app} {workload} {msg_prefix:?}"),
            timeout,
            |s| {
                let units = s["applications"][app]["units"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                units.len() == n
                    && units.values().all(|u| {
                        u["workload-status"]["current"] == workload
                            && u["workload-status"]["message"]
                                .as_str()
                                .unwrap_or("")
                                .starts_with(msg_prefix)
                            && u["juju-status"]["current"] == "idle"
                    })
            },
        )
    }

    pub fn settle(&self, timeout: &str) {
        self.ok(&["wait-settled", "--timeout", timeout]);
    }

    /// A handle on this controller for another thread (the Env still owns the controller).
    pub fn share(&self) -> Shared {
        Shared {
            home: self.home.path().to_path_buf(),
            model: self.model.clone(),
            bin: self.bin.clone(),
        }
    }

    /// `juju exec` inside a unit's machine.
    pub fn exec(&self, unit: &str, script: &str) -> Run {
        self.run(&["exec", "--unit", unit, "--", script])
    }

    /// A file of `unit`'s machine, as the host reaches it (through its init's root).
    pub fn machine_file(&self, unit: &str, path: &str) -> PathBuf {
        let pid = self.machine_pid(&self.machine(unit));
        PathBuf::from(format!("/proc/{pid}/root{path}"))
    }

    pub fn exec_ok(&self, unit: &str, script: &str) -> String {
        let r = self.exec(unit, script);
        assert_eq!(
            r.code, 0,
            "exec on {unit} {script:?} failed:\n{}{}",
            r.stdout, r.stderr
        );
        r.stdout
    }

    /// `juju run --format json`; returns (exit code, the task).
    /// `juju run --format json --wait 10m <unit> <args>`: its exit code and the task. As on
    /// Juju 3.6, a task that `action-fail`ed with its process exiting 0 exits 0: a refusal
    /// is seen in the task's status (`assert_refused`).
    pub fn run_action(&self, unit: &str, args: &[&str]) -> (i32, Value) {
        let mut a = vec!["run", "--format", "json", "--wait", "10m", unit];
        a.extend(args);
        let r = self.run(&a);
        let v: Value = serde_json::from_str(&r.stdout)
            .unwrap_or_else(|_| panic!("no JSON from run {args:?}: {}{}", r.stdout, r.stderr));
        let task = v.as_object().unwrap().values().next().unwrap().clone();
        (r.code, task)
    }

    pub fn units(&self, app: &str) -> Vec<String> {
        units_of(&self.status(), app)
    }

    /// A clean reboot of a unit's machine; returns once it has booted again (a new PID 1).
    pub fn reboot_and_wait(&self, unit: &str) {
        let machine = self.machine(unit);
        let init = self.machine_pid(&machine);
        self.ok(&["reboot-machine", unit]);
        self.wait_booted(&machine, init);
    }

    /// Waits until a machine runs again with a PID 1 other than `old_init`.
    pub fn wait_booted(&self, machine: &str, old_init: u32) {
        self.wait(
            &format!("machine {machine} to boot again"),
            Duration::from_secs(60),
            |_| {
                self.run(&["show-machine", machine, "--format", "json"])
                    .stdout
                    .contains("\"started\"")
                    && self.machine_pid(machine) != old_init
            },
        );
    }

    /// Makes the charm SIGKILL itself the next time it reaches `step` on `unit`.
    pub fn crash_at(&self, unit: &str, step: &str) {
        self.exec_ok(
            unit,
            &format!("mkdir -p /var/lib/etcd-charm && echo {step} > /var/lib/etcd-charm/crash-at"),
        );
    }

    /// Makes the charm SIGKILL itself at each of `steps` on `unit`, in this order.
    pub fn crash_at_each(&self, unit: &str, steps: &[&str]) {
        self.exec_ok(
            unit,
            &format!(
                "mkdir -p /var/lib/etcd-charm && printf '%s\\n' {} > /var/lib/etcd-charm/crash-at",
                steps.join(" ")
            ),
        );
    }

    /// The crash point set on `unit` has fired (the charm removes it as it dies).
    pub fn crash_consumed(&self, unit: &str) -> bool {
        self.exec(unit, "test ! -e /var/lib/etcd-charm/crash-at")
            .code
            == 0
    }

    pub fn leader(&self, app: &str) -> String {
        let s = self.status();
        s["applications"][app]["units"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(_, u)| u["leader"] == true)
            .map(|(k, _)| k.clone())
            .expect("a leader")
    }

    pub fn address(&self, unit: &str) -> String {
        let s = self.status();
        s["applications"][unit.split('/').next().unwrap()]["units"][unit]["public-address"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub fn machine(&self, unit: &str) -> String {
        let s = self.status();
        s["applications"][unit.split('/').next().unwrap()]["units"][unit]["machine"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The host PID of a machine's PID 1.
    pub fn machine_pid(&self, machine: &str) -> u32 {
        let v: Value =
            serde_json::from_str(&self.ok(&["show-machine", machine, "--format", "json"])).unwrap();
        v[machine]["init-pid"].as_u64().unwrap() as u32
    }
}

/// See `Env::share`.
#[derive(Clone)]
pub struct Shared {
    home: PathBuf,
    model: String,
    bin: PathBuf,
}

impl Shared {
    pub fn exec(&self, unit: &str, script: &str) -> Run {
        Command::new(&self.bin)
            .env("CHARM_HARNESS_HOME", &self.home)
            .env("JUJU_MODEL", &self.model)
            .args(["exec", "--unit", unit, "--", script])
            .stdin(Stdio::null())
            .output()
            .unwrap()
            .into()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-controller").output();
    }
}

/// easyrsa as a packed charm (its metadata, dispatch and the built binary in `bin/`): its
/// checkout directory has no binary of its own. One directory per binary content, made
/// under a temporary name and renamed, so parallel test processes never see half of one.
fn packed_easyrsa(store: &Path) -> PathBuf {
    let root = repo_root();
    let bin = target_dir().join("easyrsa-charm");
    let body = std::fs::read(&bin).expect("target/release/easyrsa-charm (cargo build --release)");
    let sum = {
        use sha2::Digest;
        let d = sha2::Sha256::digest(&body);
        d.iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let dir = store.join(format!(".easyrsa-{sum}"));
    if !dir.join("bin/easyrsa-charm").exists() {
        let tmp = store.join(format!(".easyrsa-tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp); // a leftover of an earlier run with this PID
        std::fs::create_dir_all(tmp.join("bin")).unwrap();
        for f in ["metadata.yaml", "dispatch"] {
            std::fs::copy(root.join("easyrsa").join(f), tmp.join(f)).unwrap();
        }
        std::fs::copy(&bin, tmp.join("bin/easyrsa-charm")).unwrap();
        if std::fs::rename(&tmp, &dir).is_err() {
            // another test process made the same directory first
            std::fs::remove_dir_all(&tmp).unwrap();
        }
    }
    dir
}

/// Polls `cond` until it holds; panics naming `what` after `timeout`.
pub fn until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Deploys the repository's charm as `etcd` with `n` units from an etcd release tarball.
pub fn deploy_etcd(env: &Env, n: u32, tarball: &Path, extra: &[&str]) {
    let n = n.to_string();
    let res = format!("etcd={}", tarball.display());
    let root = repo_root();
    let mut args = vec![
        "deploy",
        root.to_str().unwrap(),
        "etcd",
        "-n",
        &n,
        "--resource",
        &res,
    ];
    args.extend(extra);
    env.ok(&args);
}

/// Deploys `n` units as `deploy_etcd` does and waits until every one is "Healthy with n
/// known peers" (two minutes for one unit, three for more).
pub fn deploy_healthy(env: &Env, n: u32, tarball: &Path, extra: &[&str]) {
    deploy_etcd(env, n, tarball, extra);
    let minutes = if n == 1 { 2 } else { 3 };
    env.wait_units(
        "etcd",
        n as usize,
        "active",
        &format!("Healthy with {n} known peers"),
        Duration::from_secs(60 * minutes),
    );
}

/// The directory of one etcd build's binaries in the fixtures (`tests/setup.sh`).
pub fn etcd_build(version: &str) -> PathBuf {
    fixtures().join(format!("etcd-{version}"))
}

pub fn etcd35() -> PathBuf {
    etcd_build("3.5.1")
}

pub fn etcd34() -> PathBuf {
    etcd_build("3.4.23")
}

/// Fails if any unit's private key shows up in the controller's logs (every `*.log` under its
/// home, and `debug-log` at every level, which carries the hooks' output), and checks that the
/// controller's state file, which holds secret contents and relation data, is 0600.
pub fn assert_no_key_material_in_logs(env: &Env) {
    let mut needles = vec![];
    for unit in env.units("etcd") {
        let pems = env.exec_ok(
            &unit,
            "cat /etc/etcd/pki/*.key /etc/etcd/pki/root.password /var/lib/etcd-charm/*.key 2>/dev/null; true",
        );
        needles.extend(
            pems.lines()
                .filter(|l| l.len() >= 40 && !l.starts_with("-----"))
                .map(String::from),
        );
    }
    assert!(
        !needles.is_empty(),
        "found the units' private keys to look for"
    );
    let mut logs = vec![(
        "debug-log".to_string(),
        env.ok(&["debug-log", "--limit", "1000000", "--level", "DEBUG"]),
    )];
    let mut dirs = vec![env.home.path().to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let ty = e.file_type().unwrap();
            // machines/ holds the machines' disks, where the keys belong.
            if ty.is_dir() && p.file_name().is_some_and(|n| n != "machines") {
                dirs.push(p);
            } else if ty.is_file() && p.extension().is_some_and(|x| x == "log") {
                logs.push((
                    p.display().to_string(),
                    std::fs::read_to_string(&p).unwrap_or_default(),
                ));
            } else if ty.is_file() && p.file_name().is_some_and(|n| n == "state.json") {
                use std::os::unix::fs::PermissionsExt;
                let mode = e.metadata().unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{} is 0600", p.display());
            }
        }
    }
    for (name, text) in &logs {
        for n in &needles {
            assert!(!text.contains(n.as_str()), "key material in {name}");
        }
    }
}

/// `openssl verify` on the host: does `ca` (a PEM bundle) vouch for `cert`?
pub fn openssl_verifies(ca: &str, cert: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca).unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
    Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(dir.path().join("ca.pem"))
        .arg(dir.path().join("cert.pem"))
        .output()
        .unwrap()
        .status
        .success()
}

/// snapd on a machine that has none, as Ubuntu's image would have it: the package from the
/// apt mirror, seeded offline (the seed snaps stand in for the store).
pub fn install_snapd_by_hand(env: &Env, unit: &str) {
    let seed = fixtures().join("seed");
    env.exec_ok(
        unit,
        &format!(
            "apt-get install -y -qq --no-install-recommends snapd >/dev/null \
             && systemctl start systemd-udevd snapd.socket snapd.service \
             && timeout 120 snap wait system seed.loaded \
             && snap install --dangerous {0}/bare_1.0_all.snap >/dev/null \
             && snap install --dangerous {0}/snapd_2.57.6_amd64.snap >/dev/null",
            seed.display()
        ),
    );
}

/// A locally packed etcd snap of the fixtures (tests/setup.sh).
pub fn snap_fixture(version: &str) -> PathBuf {
    fixtures().join(format!("snaps/etcd_{version}_amd64.snap"))
}

/// A lone unit on the Debian package made ready for `snap-upgrade`: snapd installed by hand,
/// the 3.5.1 snap attached with `verb` (`attach` or `attach-resource`, as the test types it),
/// and the unit saying the upgrade is available.
pub fn offer_snap_upgrade(env: &Env, verb: &str) {
    install_snapd_by_hand(env, "etcd/0");
    let args = [
        verb,
        "etcd",
        &format!("etcd={}", snap_fixture("3.5.1").display()),
    ];
    // `attach` is the Juju 2.9 spelling: typed on a 2.9 client.
    if verb == "attach" {
        env.ok29(&args);
    } else {
        env.ok(&args);
    }
    env.wait_units(
        "etcd",
        1,
        "active",
        "Healthy with 1 known peers; snap-upgrade available",
        Duration::from_secs(120),
    );
}
