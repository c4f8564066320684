//! etcd from the host's side of a test: client credentials copied out of a unit, a writer that
//! records every acknowledged write, and the checks a fault run ends with (nothing acknowledged
//! is lost, every member holds the same keys).

use super::{etcd35, target_dir, Env, Run};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const MIN: Duration = Duration::from_secs(60);

/// curl with the client credentials in `dir` (ca.crt, client.crt, client.key).
pub fn curl_in(dir: &Path) -> Command {
    let mut c = Command::new("curl");
    c.args(["-sS", "-m", "5", "--cacert"])
        .arg(dir.join("ca.crt"))
        .arg("--cert")
        .arg(dir.join("client.crt"))
        .arg("--key")
        .arg(dir.join("client.key"));
    c
}

/// Raises `alarm` on the member at `endpoint` through etcd's alarm API (the request etcd's
/// own quota check makes), with the client credentials in `dir`.
pub fn raise_alarm(dir: &Path, endpoint: &str, alarm: &str) {
    let post = |path: &str, body: &str| {
        let out = curl_in(dir)
            .args(["-X", "POST", "-d", body, &format!("{endpoint}{path}")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "POST {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let status = post("/v3/maintenance/status", "{}");
    let member = status["header"]["member_id"].as_str().unwrap().to_string();
    let raise = serde_json::json!({"action": "ACTIVATE", "memberID": member, "alarm": alarm});
    post("/v3/maintenance/alarm", &raise.to_string());
}

/// Client credentials copied out of a unit, for etcdctl on the host.
pub struct Creds {
    pub dir: tempfile::TempDir,
}

impl Creds {
    pub fn from_unit(env: &Env, unit: &str) -> Creds {
        Creds::from_unit_dir(env, unit, "/etc/etcd/pki")
    }
    /// ca.crt, client.crt and client.key as a unit keeps them in `dir` (a client charm's).
    pub fn from_unit_dir(env: &Env, unit: &str, dir: &str) -> Creds {
        let tmp = tempfile::tempdir().unwrap();
        for f in ["ca.crt", "client.crt", "client.key"] {
            let body = env.exec_ok(unit, &format!("cat {dir}/{f}"));
            std::fs::write(tmp.path().join(f), body).unwrap();
        }
        Creds { dir: tmp }
    }
    pub fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }
    /// The same credentials in a directory of their own (for another thread).
    pub fn copy(&self) -> Creds {
        let dir = tempfile::tempdir().unwrap();
        for f in ["ca.crt", "client.crt", "client.key"] {
            std::fs::copy(self.path(f), dir.path().join(f)).unwrap();
        }
        Creds { dir }
    }
    /// etcdctl (3.5.1 from the fixtures) with or without the client certificate.
    pub fn etcdctl(&self, endpoints: &str, with_cert: bool, args: &[&str]) -> Output {
        etcdctl(self.dir.path(), endpoints, with_cert, args)
    }
    /// etcdctl with the client certificate and `input` on its stdin (a large value for
    /// `put`, a script for `txn`).
    pub fn etcdctl_input(&self, endpoints: &str, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let mut c = Command::new(etcd35().join("etcdctl"))
            .arg(format!("--endpoints={endpoints}"))
            .arg(format!("--cacert={}", self.path("ca.crt").display()))
            .arg(format!("--cert={}", self.path("client.crt").display()))
            .arg(format!("--key={}", self.path("client.key").display()))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(input).unwrap();
        c.wait_with_output().unwrap()
    }
    /// curl with these credentials (5 s at most, errors shown): add the URL and options.
    pub fn curl(&self) -> Command {
        curl_in(self.dir.path())
    }
    /// Raises `alarm` (NOSPACE, CORRUPT) on the member at `endpoint`, as etcd itself does.
    pub fn raise_alarm(&self, endpoint: &str, alarm: &str) {
        raise_alarm(self.dir.path(), endpoint, alarm)
    }
    /// A request to etcd's v2 API at `endpoint` (`PUT`, `GET` or `DELETE` of `/v2/keys/key`,
    /// a value for `PUT`), with the client certificate: etcd's JSON answer.
    pub fn v2(&self, endpoint: &str, method: &str, key: &str, value: Option<&str>) -> Value {
        let mut c = self.curl();
        c.args(["-X", method]).arg(format!(
            "{endpoint}/v2/keys/{}",
            key.trim_start_matches('/')
        ));
        if let Some(v) = value {
            c.args(["--data-urlencode", &format!("value={v}")]);
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "v2 {method} {key}: {out:?}");
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("v2 {method} {key}: {e}: {out:?}"))
    }
}

fn etcdctl(creds: &Path, endpoints: &str, with_cert: bool, args: &[&str]) -> Output {
    let mut c = Command::new(etcd35().join("etcdctl"));
    c.arg(format!("--endpoints={endpoints}"))
        .arg("--dial-timeout=2s")
        .arg("--command-timeout=4s");
    c.arg(format!("--cacert={}", creds.join("ca.crt").display()));
    if with_cert {
        c.arg(format!("--cert={}", creds.join("client.crt").display()))
            .arg(format!("--key={}", creds.join("client.key").display()));
    }
    c.args(args).output().unwrap()
}

/// Every unit's client endpoint, comma-separated.
pub fn endpoints(env: &Env) -> String {
    env.units("etcd")
        .iter()
        .map(|u| unit_endpoint(env, u))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn unit_endpoint(env: &Env, unit: &str) -> String {
    format!("https://{}:2379", env.address(unit))
}

/// The unit whose member is the raft leader.
pub fn raft_leader_unit(env: &Env, creds: &Creds) -> String {
    let deadline = Instant::now() + MIN;
    loop {
        let out = creds.etcdctl(&endpoints(env), true, &["endpoint", "status", "-w", "json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        for e in v.as_array().cloned().unwrap_or_default() {
            if e["Status"]["leader"] != 0
                && e["Status"]["leader"] == e["Status"]["header"]["member_id"]
            {
                let ep = e["Endpoint"].as_str().unwrap().to_string();
                for u in env.units("etcd") {
                    if ep.contains(&format!("//{}:", env.address(&u))) {
                        return u;
                    }
                }
            }
        }
        assert!(Instant::now() < deadline, "no raft leader found: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Keeps writing keys under a prefix through whatever endpoints it is given, one at a time,
/// and records when each write was acknowledged.
pub struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(String, Instant)>>>,
    started: Instant,
    handle: std::thread::JoinHandle<()>,
}

impl Writer {
    pub fn start(creds: PathBuf, endpoints: Arc<Mutex<String>>, prefix: &str) -> Writer {
        Writer::start_any(vec![creds], endpoints, prefix)
    }

    /// A writer that fails over as a client with a short timeout does: each write goes
    /// first to the next endpoint in turn and gives up after 1 s, so a member that is busy
    /// (defragmenting: etcd blocks its requests meanwhile) costs one short attempt, and the
    /// longest gap measures the cluster, not one member.
    pub fn start_failing_over(
        creds: PathBuf,
        endpoints: Arc<Mutex<String>>,
        prefix: &str,
    ) -> Writer {
        Writer::spawn(vec![creds], endpoints, prefix, true)
    }

    /// A writer holding several sets of credentials (a client given new ones during a CA
    /// move): each write is tried with each set in turn until one is acknowledged, failing
    /// over between endpoints as `start_failing_over` does (two sets timing out 4 s each on
    /// a restarting member made an 8 s gap that measured the writer, not the cluster).
    pub fn start_any(creds: Vec<PathBuf>, endpoints: Arc<Mutex<String>>, prefix: &str) -> Writer {
        Writer::spawn(creds, endpoints, prefix, true)
    }

    fn spawn(
        creds: Vec<PathBuf>,
        endpoints: Arc<Mutex<String>>,
        prefix: &str,
        fail_over: bool,
    ) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(vec![]));
        let (s, a, prefix) = (stop.clone(), acked.clone(), prefix.to_string());
        let handle = std::thread::spawn(move || {
            let mut i = 0;
            while !s.load(Ordering::SeqCst) {
                let key = format!("{prefix}{i:06}");
                let mut eps = endpoints.lock().unwrap().clone();
                let mut args = vec!["put", key.as_str(), "v"];
                if fail_over {
                    let list: Vec<&str> = eps.split(',').collect();
                    let n = list.len().max(1);
                    eps = (0..list.len())
                        .map(|k| list[(i + k) % n])
                        .collect::<Vec<_>>()
                        .join(",");
                    // The later flag wins over etcdctl()'s 4 s.
                    args.insert(0, "--command-timeout=1s");
                }
                if creds
                    .iter()
                    .any(|c| etcdctl(c, &eps, true, &args).status.success())
                {
                    a.lock().unwrap().push((key, Instant::now()));
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Writer {
            stop,
            acked,
            started: Instant::now(),
            handle,
        }
    }

    pub fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until `n` more writes than now have been acknowledged.
    pub fn wait_for_writes(&self, n: usize, what: &str) {
        let want = self.acked() + n;
        let deadline = Instant::now() + 2 * MIN;
        while self.acked() < want {
            assert!(
                Instant::now() < deadline,
                "the writer got no writes through {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops writing; returns the acknowledged keys and the longest time without an
    /// acknowledgement.
    pub fn finish(self) -> (Vec<String>, Duration) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap();
        let acked = std::mem::take(&mut *self.acked.lock().unwrap());
        let mut gap = Duration::ZERO;
        let mut last = self.started;
        for (_, t) in &acked {
            gap = gap.max(t.duration_since(last));
            last = *t;
        }
        (acked.into_iter().map(|(k, _)| k).collect(), gap)
    }
}

/// What a fault did to the writes: the row of docs/RELIABILITY.md.
pub struct Tally {
    pub acked: usize,
    pub lost: usize,
    pub longest_gap: Duration,
}

/// Stops the writer and checks that every key it got acknowledged can be read back.
pub fn no_acknowledged_write_lost(
    creds: &Creds,
    endpoints: &str,
    writer: Writer,
    during: &str,
) -> Tally {
    writer.wait_for_writes(10, &format!("after the {during}"));
    let (acked, gap) = writer.finish();
    let prefix = acked[0].trim_end_matches(|c: char| c.is_ascii_digit());
    let out = creds.etcdctl(endpoints, true, &["get", prefix, "--prefix", "--keys-only"]);
    assert!(
        out.status.success(),
        "reading back the writes after the {during}"
    );
    let have: std::collections::HashSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|k| !have.contains(*k)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged keys lost during the {during}, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    Tally {
        acked: acked.len(),
        lost: lost.len(),
        longest_gap: gap,
    }
}

/// Waits until every member answers and all hold the same keys (`endpoint hashkv` agrees at
/// one revision).
pub fn members_agree(env: &Env, creds: &Creds, what: &str) {
    let eps = endpoints(env);
    let deadline = Instant::now() + 2 * MIN;
    let mut last = String::new();
    loop {
        // The same revision for everyone: the hash of the keys as of the newest one.
        let st = creds.etcdctl(&eps, true, &["endpoint", "status", "-w", "json"]);
        let v: Value = serde_json::from_slice(&st.stdout).unwrap_or_default();
        let rev = v.as_array().and_then(|a| {
            a.iter()
                .filter_map(|e| e["Status"]["header"]["revision"].as_i64())
                .min()
        });
        if let Some(rev) = rev {
            let out = creds.etcdctl(
                &eps,
                true,
                &[
                    "endpoint",
                    "hashkv",
                    "--rev",
                    &rev.to_string(),
                    "-w",
                    "json",
                ],
            );
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let hashes: Vec<i64> = v
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e["HashKV"]["hash"].as_i64())
                        .collect()
                })
                .unwrap_or_default();
            let n = env.units("etcd").len();
            if out.status.success() && hashes.len() == n && hashes.windows(2).all(|w| w[0] == w[1])
            {
                return;
            }
            last = format!("{v}");
        }
        assert!(
            Instant::now() < deadline,
            "the members do not agree on their keys after {what}: {last}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Waits until every unit's member answers `/health` true; returns when that happened.
pub fn wait_all_healthy(env: &Env, creds: &Creds, what: &str) -> Instant {
    let deadline = Instant::now() + 3 * MIN;
    loop {
        let units = env.units("etcd");
        let ok = units.iter().all(|u| {
            creds
                .etcdctl(&unit_endpoint(env, u), true, &["endpoint", "health"])
                .status
                .success()
        });
        if ok {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "the members did not all become healthy after {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The member ID a unit's own endpoint reports (etcdctl endpoint status).
pub fn member_id(env: &Env, creds: &Creds, unit: &str) -> Option<u64> {
    let out = creds.etcdctl(
        &unit_endpoint(env, unit),
        true,
        &["endpoint", "status", "-w", "json"],
    );
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v[0]["Status"]["header"]["member_id"].as_u64()
}

/// Waits until there are `n` units and every one's status message is exactly "Healthy with
/// `n` known peers".
pub fn wait_healthy_status(env: &Env, n: usize, what: &str) {
    let want = format!("Healthy with {n} known peers");
    env.wait(
        &format!("every unit to report healthy again after {what}"),
        3 * MIN,
        |s| {
            let units = super::units_of(s, "etcd");
            units.len() == n && units.iter().all(|u| super::unit_message(s, u) == want)
        },
    );
}

/// One fault, from a running writer's point of view: writes acknowledged while it lasted,
/// lost ones (always 0, or the test failed), the longest gap, and the time from the fault's
/// start until every member was healthy again. Written to `target/reliability/<name>.json`
/// for docs/RELIABILITY.md (`python3 tests/reliability.py`).
pub fn record(name: &str, fault: &str, tally: &Tally, back: Duration) {
    let dir = target_dir().join("reliability");
    std::fs::create_dir_all(&dir).unwrap();
    let v = serde_json::json!({
        "fault": fault,
        "acked": tally.acked,
        "lost": tally.lost,
        "longest_gap_s": (tally.longest_gap.as_secs_f64() * 10.0).round() / 10.0,
        "back_s": (back.as_secs_f64() * 10.0).round() / 10.0,
    });
    std::fs::write(dir.join(format!("{name}.json")), v.to_string()).unwrap();
    eprintln!("reliability {name}: {v}");
}

/// Runs one fault under a fresh writer: `inject` makes the fault and lifts it. Checks that no
/// acknowledged write was lost, that the members agree and that the `units_after` units all
/// report healthy again; records the row.
pub fn under_writer(
    env: &Env,
    creds: &Creds,
    name: &str,
    fault: &str,
    units_after: usize,
    inject: impl FnOnce(),
) {
    let eps = Arc::new(Mutex::new(endpoints(env)));
    let writer = Writer::start(
        creds.dir.path().to_path_buf(),
        eps.clone(),
        &format!("/faults/{name}/"),
    );
    writer.wait_for_writes(5, "before the fault");
    let start = Instant::now();
    inject();
    let back = wait_all_healthy(env, creds, fault).duration_since(start);
    writer.wait_for_writes(10, "after the fault");
    *eps.lock().unwrap() = endpoints(env);
    let tally = no_acknowledged_write_lost(creds, &endpoints(env), writer, fault);
    members_agree(env, creds, fault);
    record(name, fault, &tally, back);
    wait_healthy_status(env, units_after, fault);
}

/// The PID of a unit's running etcd, as its machine's PID namespace numbers it.
pub fn etcd_pid(env: &Env, unit: &str) -> String {
    env.exec_ok(unit, "systemctl show -p MainPID --value etcd.service")
        .trim()
        .to_string()
}

/// Waits until exactly `n` members answer and every one reports running `version`.
pub fn wait_all_members_run(env: &Env, creds: &Creds, n: usize, version: &str) {
    env.wait(&format!("every member to run {version}"), 3 * MIN, |_| {
        let out = creds.etcdctl(&endpoints(env), true, &["endpoint", "status", "-w", "json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v.as_array()
            .is_some_and(|a| a.len() == n && a.iter().all(|e| e["Status"]["version"] == version))
    });
}

/// One look at the cluster from the host: each answering member's version, and the raft
/// leader's member ID.
#[derive(Debug, Clone)]
pub struct Sample {
    pub versions: std::collections::BTreeMap<u64, String>,
    /// each answering member's database file size
    pub db_sizes: std::collections::BTreeMap<u64, u64>,
    pub leader: u64,
}

/// Each endpoint is asked on its own, all at once, so a member that is down (in its turn)
/// shows as missing instead of holding the sample until it is back, and a sample takes as
/// long as its slowest answer, not the sum of them. `patience` bounds each answer: short to
/// see quick restarts, longer where a slow answer must not read as a member away.
pub fn sample(creds: &Creds, eps: &str, patience: Patience) -> Sample {
    let timeouts: &[&str] = match patience {
        Patience::Quick => &["--dial-timeout=1s", "--command-timeout=2s"],
        Patience::Patient => &["--command-timeout=3s"],
    };
    let mut s = Sample {
        versions: std::collections::BTreeMap::new(),
        db_sizes: std::collections::BTreeMap::new(),
        leader: 0,
    };
    let answers: Vec<Value> = std::thread::scope(|scope| {
        let asks: Vec<_> = eps
            .split(',')
            .map(|ep| {
                scope.spawn(move || {
                    let mut args = vec!["endpoint", "status", "-w", "json"];
                    args.extend(timeouts);
                    let out = creds.etcdctl(ep, true, &args);
                    serde_json::from_slice::<Value>(&out.stdout).ok()
                })
            })
            .collect();
        asks.into_iter()
            .filter_map(|a| a.join().ok().flatten())
            .collect()
    });
    for e in answers
        .iter()
        .flat_map(|v| v.as_array().cloned().unwrap_or_default())
    {
        let st = &e["Status"];
        if let Some(id) = st["header"]["member_id"].as_u64() {
            s.versions
                .insert(id, st["version"].as_str().unwrap_or("").to_string());
            s.db_sizes.insert(id, st["dbSize"].as_u64().unwrap_or(0));
            s.leader = s.leader.max(st["leader"].as_u64().unwrap_or(0));
        }
    }
    s
}

#[derive(Clone, Copy)]
pub enum Patience {
    /// a config roll's restarts take a second or two: sample often
    Quick,
    /// an upgrade's samples must not lose a slow member
    Patient,
}

/// Samples the members until stopped.
pub struct Watch {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Watch {
    pub fn start(creds: &Creds, eps: String, patience: Patience) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(vec![]));
        let creds = creds.copy();
        let (s2, v2) = (stop.clone(), samples.clone());
        let thread = std::thread::spawn(move || {
            while !s2.load(Ordering::SeqCst) {
                let s = sample(&creds, &eps, patience);
                v2.lock().unwrap().push(s);
            }
        });
        Watch {
            stop,
            samples,
            thread,
        }
    }

    pub fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap();
        Arc::try_unwrap(self.samples).unwrap().into_inner().unwrap()
    }
}

/// `from` asks `to`'s peer port (`/members`, HTTP/1.1) with the key pair `pair` of its
/// /etc/etcd/pki (`peer`, `client`, `server`), trusting the peer CA: curl's exit code, and
/// the HTTP status on stdout (`000` when no TLS session came about).
pub fn ask_peer_port(env: &Env, from: &str, to: &str, pair: &str) -> Run {
    let peer_ep = format!("https://{}:2380/members", env.address(to));
    env.exec(
        from,
        &format!(
            "curl --http1.1 -sS -m 10 -o /dev/null -w '%{{http_code}}' --cacert /etc/etcd/pki/peer-ca.crt \
             --cert /etc/etcd/pki/{pair}.crt --key /etc/etcd/pki/{pair}.key {peer_ep}"
        ),
    )
}

/// Whether `unit`'s member answers healthy on 127.0.0.1:2379, asked inside its machine
/// with the unit's own client credentials.
pub fn healthy_on_loopback(env: &Env, unit: &str) -> bool {
    env.exec(
        unit,
        "curl -s -m 5 --cacert /etc/etcd/pki/ca.crt --cert /etc/etcd/pki/client.crt \
         --key /etc/etcd/pki/client.key https://127.0.0.1:2379/health | grep -q true",
    )
    .code
        == 0
}
