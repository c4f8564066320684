//! Day-two operations an etcd operator asks for: snapshots on a schedule, taken by one unit
//! (not the raft leader's) from a systemd timer, pruned to the retention, their age in status
//! and a warning when they stop; defragmentation without an outage, one member at a time.

mod support;

use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use support::etcd::*;
use support::*;

const TARGET: &str = "/var/backups/etcd-test";

/// The units whose machine runs the snapshot timer.
fn timer_units(env: &Env) -> Vec<String> {
    env.units("etcd")
        .into_iter()
        .filter(|u| {
            env.exec(u, "systemctl is-active --quiet etcd-charm-snapshot.timer")
                .code
                == 0
        })
        .collect()
}

/// The taker's record of its scheduled snapshots.
fn record(env: &Env, unit: &str) -> Value {
    let r = env.exec(unit, "cat /var/lib/etcd-charm/snapshot-record.json");
    serde_json::from_str(&r.stdout).unwrap_or(Value::Null)
}

fn taken(env: &Env, unit: &str) -> u64 {
    record(env, unit)["taken"].as_u64().unwrap_or(0)
}

/// The archives in the target on `unit`, oldest first.
fn archives(env: &Env, unit: &str) -> Vec<String> {
    archives_in(env, unit, TARGET)
}

fn archives_in(env: &Env, unit: &str, dir: &str) -> Vec<String> {
    env.exec_ok(unit, &format!("ls {dir}"))
        .lines()
        .filter(|l| l.ends_with(".tar.gz"))
        .map(str::to_string)
        .collect()
}

/// Three units of etcd 3.5.16 in a model of their own, healthy; the client credentials and
/// endpoints to reach them.
fn three_units(model: &str, interval: &str) -> (tempfile::TempDir, Env, Creds, String) {
    let work = tempfile::tempdir().unwrap();
    let t = etcd_tarball(work.path(), &etcd_build("3.5.16"), "3.5.16");
    let env = Env::new(model, &[&format!("update-status-hook-interval={interval}")]);
    deploy_healthy(&env, 3, &t, &[]);
    let creds = Creds::from_unit(&env, "etcd/0");
    let eps = endpoints(&env);
    (work, env, creds, eps)
}

#[test]
fn scheduled_snapshots_are_taken_by_one_unit_pruned_and_watched() {
    let (_work, env, creds, eps) = three_units("backups", "4s");
    let out = creds.etcdctl(&eps, true, &["put", "/backed-up", "by the timer"]);
    assert!(out.status.success(), "{out:?}");

    // Bad input blocks with a message naming it, and sets up nothing.
    for (kv, says) in [
        (
            "snapshot_schedule=5s",
            "snapshot_schedule \"5s\" is too short",
        ),
        (
            "snapshot_retention=0",
            "snapshot_retention 0 must be between",
        ),
        (
            "snapshot_target=backups",
            "snapshot_target \"backups\" must be an absolute path",
        ),
        (
            "snapshot_target=/var/lib/etcd/backups",
            "must be outside etcd's own files",
        ),
    ] {
        env.ok(&["config", "etcd", kv]);
        env.wait(&format!("every unit to refuse {kv}"), MIN, |s| {
            env.units("etcd").iter().all(|u| {
                s["applications"]["etcd"]["units"][u]["workload-status"]["current"] == "blocked"
                    && unit_message(s, u).contains(says)
            })
        });
        let key = kv.split('=').next().unwrap();
        let default = match key {
            "snapshot_retention" => "snapshot_retention=7".to_string(),
            "snapshot_target" => "snapshot_target=/var/backups/etcd".to_string(),
            _ => format!("{key}="),
        };
        env.ok(&["config", "etcd", &default]);
        env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", MIN);
        assert!(timer_units(&env).is_empty(), "{kv} set up a timer");
    }
    // A calendar expression systemd does not take blocks the unit that would take them.
    env.ok(&["config", "etcd", "snapshot_schedule=every day"]);
    env.wait("the taker to refuse the calendar expression", MIN, |s| {
        env.units("etcd")
            .iter()
            .any(|u| unit_message(s, u).contains("is not a systemd calendar expression"))
    });
    assert!(timer_units(&env).is_empty());

    // Every 12 s, two kept: one unit, not the raft leader's, takes them.
    env.ok(&[
        "config",
        "etcd",
        "snapshot_schedule=12s",
        "snapshot_retention=2",
        &format!("snapshot_target={TARGET}"),
    ]);
    env.wait("one unit to keep the snapshot timer", MIN, |_| {
        timer_units(&env).len() == 1
    });
    let taker = timer_units(&env).remove(0);
    assert_ne!(
        taker,
        raft_leader_unit(&env, &creds),
        "the raft leader's unit is spared"
    );
    env.wait("three scheduled snapshots", 2 * MIN, |_| {
        taken(&env, &taker) >= 3
    });
    assert_eq!(timer_units(&env), vec![taker.clone()], "still one taker");
    let kept = archives(&env, &taker);
    assert_eq!(kept.len(), 2, "pruned to the retention: {kept:?}");
    // Each one: 0600, its digest beside it, and the database in it holds the key.
    env.exec_ok(
        &taker,
        &format!(
            "set -e; cd {TARGET}; sha256sum -c --quiet *.tar.gz.sha256; \
             test \"$(stat -c %a *.tar.gz | sort -u)\" = 600; test \"$(stat -c %a .)\" = 700"
        ),
    );
    let newest = kept.last().unwrap();
    let st = env.exec_ok(
        &taker,
        &format!(
            "set -e; d=$(mktemp -d); tar -xzf {TARGET}/{newest} -C $d db; \
             /opt/etcd/current/etcdutl snapshot status $d/db -w json; rm -r $d"
        ),
    );
    let st: Value = serde_json::from_str(st.trim()).unwrap();
    assert!(st["totalKey"].as_u64().unwrap_or(0) >= 1, "{st}");
    // Status: the taker's own and the application's (the leader's) say how old the last is.
    env.wait("status to show the last scheduled snapshot", MIN, |s| {
        unit_message(s, &taker).contains("last scheduled snapshot")
            && s["applications"]["etcd"]["application-status"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("last scheduled snapshot")
    });

    // Snapshots that fail (the target full): a warning once the last good one is two
    // periods old, the failure named, nothing pruned; it clears when they work again.
    // The real directory stays visible under /mnt/under: what it holds once the failures
    // have begun (a snapshot that was under way when the target filled may still have
    // pruned one) is what must still be there when the target has room again.
    env.exec_ok(
        &taker,
        &format!(
            "mkdir -p /mnt/under && mount --bind {TARGET} /mnt/under && \
             mount -t tmpfs -o size=64k,mode=0700 tmpfs {TARGET}; \
             dd if=/dev/zero of={TARGET}/filler bs=4k 2>/dev/null || true"
        ),
    );
    env.wait("the overdue warning", 2 * MIN, |s| {
        let m = unit_message(s, &taker);
        m.contains("WARNING: the last good scheduled snapshot is")
            && m.contains("last attempt failed")
    });
    let kept = archives_in(&env, &taker, "/mnt/under");
    assert_eq!(kept.len(), 2, "{kept:?}");
    // Listed in the same breath as the room comes back (a snapshot 12 s later may prune).
    let after: Vec<String> = env
        .exec_ok(
            &taker,
            &format!("umount {TARGET} && umount /mnt/under && ls {TARGET}"),
        )
        .lines()
        .filter(|l| l.ends_with(".tar.gz"))
        .map(str::to_string)
        .collect();
    assert_eq!(after, kept, "nothing pruned while they failed");
    env.wait("the warning to clear", 2 * MIN, |s| {
        unit_message(s, &taker).contains("last scheduled snapshot")
            && !unit_message(s, &taker).contains("WARNING")
    });

    // A calendar expression: every 10 s by the clock.
    let before = taken(&env, &taker);
    env.ok(&["config", "etcd", "snapshot_schedule=*:*:0/10"]);
    env.wait("two snapshots on the calendar", 2 * MIN, |_| {
        taken(&env, &taker) >= before + 2
    });
    env.exec_ok(
        &taker,
        "grep -q '^OnCalendar=\\*:\\*:0/10$' /etc/systemd/system/etcd-charm-snapshot.timer",
    );

    // The taker goes: another unit takes them from then on.
    env.ok(&["remove-unit", &taker]);
    env.wait_units("etcd", 2, "active", "Healthy with 2 known peers", 2 * MIN);
    env.wait("another unit to take the snapshots", 2 * MIN, |_| {
        timer_units(&env).len() == 1
    });
    let next = timer_units(&env).remove(0);
    assert_ne!(next, taker);
    env.wait("a snapshot by the new taker", MIN, |_| {
        taken(&env, &next) >= 1
    });

    // Off: no timer anywhere; the snapshots stay.
    env.ok(&["config", "etcd", "snapshot_schedule="]);
    env.wait("the timer to go", MIN, |_| timer_units(&env).is_empty());
    assert!(!archives(&env, &next).is_empty());
}

/// Writes `n` values of 1 MiB under `prefix`, deletes all but the first `keep` and
/// compacts: each member's database file keeps its size, the deleted values' pages now free.
fn fragment(creds: &Creds, eps: &str, prefix: &str, n: usize, keep: usize) {
    let value = vec![b'x'; 1 << 20];
    for i in 0..n {
        let out = creds.etcdctl_input(eps, &["put", &format!("{prefix}{i:03}")], &value);
        assert!(out.status.success(), "put {prefix}{i:03}: {out:?}");
    }
    // [prefix+keep, prefix+"~"): every key from the first one not kept on.
    let from = format!("{prefix}{keep:03}");
    let out = creds.etcdctl(eps, true, &["del", &from, &format!("{prefix}~")]);
    assert!(out.status.success(), "{out:?}");
    let out = creds.etcdctl(eps, true, &["get", "/", "-w", "json", "--limit=1"]);
    let rev = serde_json::from_slice::<Value>(&out.stdout).unwrap()["header"]["revision"]
        .as_u64()
        .unwrap();
    let out = creds.etcdctl(eps, true, &["compact", &rev.to_string(), "--physical"]);
    assert!(out.status.success(), "{out:?}");
}

const MIB: u64 = 1 << 20;

/// One look at a member's metrics: when it was asked, when it answered, whether a defrag
/// was in flight there (etcd's `etcd_disk_defrag_inflight`) and its database file's size.
#[derive(Debug, Clone, Copy)]
struct Poll {
    sent: Instant,
    answered: Instant,
    inflight: Option<bool>,
    size: Option<u64>,
}

/// Reads one member's metrics over and over (one kept-alive TLS connection, so looks come
/// milliseconds apart).
struct SizePoller {
    stop: Arc<std::sync::atomic::AtomicBool>,
    seen: Arc<Mutex<Vec<Poll>>>,
    thread: std::thread::JoinHandle<()>,
}

impl SizePoller {
    fn start(creds: &Creds, ep: &str) -> SizePoller {
        let read = |f: &str| std::fs::read(creds.path(f)).unwrap();
        let mut pem = read("client.crt");
        pem.extend_from_slice(b"\n");
        pem.extend(read("client.key"));
        let http = reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&read("ca.crt")).unwrap())
            .identity(reqwest::Identity::from_pem(&pem).unwrap())
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .unwrap();
        let url = format!("{ep}/metrics");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(vec![]));
        let (s, v) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                let sent = Instant::now();
                let text = http
                    .get(&url)
                    .send()
                    .and_then(|r| r.text())
                    .unwrap_or_default();
                let answered = Instant::now();
                let metric = |name: &str| {
                    text.lines()
                        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                        .and_then(|v| v.trim().parse::<f64>().ok())
                };
                v.lock().unwrap().push(Poll {
                    sent,
                    answered,
                    inflight: metric("etcd_disk_defrag_inflight").map(|x| x > 0.0),
                    size: metric("etcd_mvcc_db_total_size_in_bytes").map(|x| x as u64),
                });
            }
        });
        SizePoller { stop, seen, thread }
    }

    fn wait_for_answers(&self, n: usize) {
        self.wait_until("a member to answer", MIN, |seen| {
            seen.iter().filter(|p| p.size.is_some()).count() >= n
        });
    }

    /// Waits until what this poller has seen satisfies `cond`.
    fn wait_until(&self, what: &str, timeout: std::time::Duration, cond: impl Fn(&[Poll]) -> bool) {
        let deadline = Instant::now() + timeout;
        while !cond(&self.seen.lock().unwrap()) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    fn finish(self) -> Vec<Poll> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().unwrap();
        Arc::try_unwrap(self.seen).unwrap().into_inner().unwrap()
    }
}

#[test]
fn defragmentation_goes_one_member_at_a_time_under_a_writer() {
    let (_work, env, creds, eps) = three_units("defrag", "3s");

    // Bad thresholds block and change nothing.
    for bad in ["half", "50%,16MB", "100%"] {
        env.ok(&["config", "etcd", &format!("defrag_threshold={bad}")]);
        env.wait(&format!("every unit to refuse {bad}"), MIN, |s| {
            env.units("etcd")
                .iter()
                .all(|u| unit_message(s, u).contains("defrag_threshold"))
        });
    }
    env.ok(&["config", "etcd", "defrag_threshold="]);
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", MIN);

    // 64 values of 1 MiB, 20 kept: files of ~64 MiB, two thirds free pages; a defrag copies
    // the 20 MiB still in use, long enough to see the member busy.
    fragment(&creds, &eps, "/big/", 64, 20);
    let before = sample(&creds, &eps, Patience::Patient);
    assert_eq!(before.db_sizes.len(), 3);
    assert!(
        before.db_sizes.values().all(|s| *s >= 56 * MIB),
        "fragmented: {:?}",
        before.db_sizes
    );
    let raft_leader = before.leader;

    // A client that fails over: a member being defragmented blocks its own clients (etcd's
    // design); what the roll promises is that the others serve meanwhile.
    let writer = Writer::start_failing_over(
        creds.dir.path().to_path_buf(),
        Arc::new(Mutex::new(eps.clone())),
        "/writer/",
    );
    writer.wait_for_writes(20, "the writer to start");
    let pollers: Vec<SizePoller> = eps
        .split(',')
        .map(|ep| SizePoller::start(&creds, ep))
        .collect();
    for p in &pollers {
        p.wait_for_answers(3);
    }
    env.ok(&["config", "etcd", "defrag_threshold=50%,16MiB"]);
    // Each member's own poller sees it small (not a sample from elsewhere: the pollers
    // stop below, and each must have seen its member shrink).
    for p in &pollers {
        p.wait_until("every member to be defragmented", 2 * MIN, |seen| {
            seen.iter().any(|p| p.size.is_some_and(|z| z < 40 * MIB))
        });
    }
    let seen: Vec<Vec<Poll>> = pollers.into_iter().map(SizePoller::finish).collect();
    let tally = no_acknowledged_write_lost(&creds, &eps, writer, "defragmentation");

    // From each member's own metrics: each was seen defragmenting, and the spans in which
    // two members were certainly defragmenting (from the answer of the first look that saw
    // it to the sending of the last) never overlap.
    let eps_list: Vec<&str> = eps.split(',').collect();
    let spans: Vec<(Instant, Instant)> = seen
        .iter()
        .zip(&eps_list)
        .map(|(polls, ep)| {
            let on: Vec<&Poll> = polls.iter().filter(|p| p.inflight == Some(true)).collect();
            assert!(
                on.len() >= 2,
                "{ep} was seen defragmenting in {} looks: too few to tell",
                on.len()
            );
            eprintln!("{ep}: seen defragmenting in {} looks", on.len());
            (on[0].answered, on[on.len() - 1].sent)
        })
        .collect();
    for i in 0..spans.len() {
        for j in i + 1..spans.len() {
            let (a, b) = (spans[i], spans[j]);
            assert!(
                a.1 <= b.0 || b.1 <= a.0,
                "{} and {} were defragmenting at once: {a:?} and {b:?}",
                eps_list[i],
                eps_list[j]
            );
        }
    }
    let mut shrank: Vec<(Instant, &str)> = seen
        .iter()
        .zip(&eps_list)
        .map(|(polls, ep)| {
            let at = polls
                .iter()
                .find(|p| p.size.is_some_and(|z| z < 40 * MIB))
                .unwrap_or_else(|| panic!("{ep} never seen small"))
                .answered;
            (at, *ep)
        })
        .collect();
    shrank.sort();
    let last = shrank.last().unwrap().1;
    let out = creds.etcdctl(last, true, &["endpoint", "status", "-w", "json"]);
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        st[0]["Status"]["header"]["member_id"].as_u64().unwrap(),
        raft_leader,
        "the raft leader goes last: {shrank:?}"
    );
    eprintln!(
        "defragmentation under a writer: {} writes acknowledged, longest gap {:?}",
        tally.acked, tally.longest_gap
    );
    assert!(
        tally.longest_gap < std::time::Duration::from_secs(2),
        "writes refused for {:?}, longer than an election",
        tally.longest_gap
    );

    // The action's all=true: the same way, on demand.
    env.ok(&["config", "etcd", "defrag_threshold="]);
    fragment(&creds, &eps, "/again/", 24, 0);
    let (code, task) = env.run_action(&env.leader("etcd"), &["defrag", "all=true"]);
    assert_eq!(code, 0, "{task}");
    assert!(
        task["results"]["output"]
            .as_str()
            .unwrap_or("")
            .starts_with("Defragmented 3 members one at a time"),
        "{task}"
    );
    let s = sample(&creds, &eps, Patience::Patient);
    assert!(s.db_sizes.values().all(|z| *z < 40 * MIB), "{s:?}");
}

/// Writes `n` keys `{prefix}{i:05}` = `value-{i}` through `etcdctl txn` (100 puts a
/// transaction).
fn put_many(creds: &Creds, eps: &str, prefix: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let mut script = String::from("\n");
        for i in chunk {
            script.push_str(&format!("put {prefix}{i:05} value-{i}\n"));
        }
        script.push_str("\n\n");
        let out = creds.etcdctl_input(eps, &["txn"], script.as_bytes());
        assert!(out.status.success(), "txn at {prefix}{}: {out:?}", chunk[0]);
    }
}

/// Attaches the credentials archive `package-client-credentials` makes on `unit` (copied to
/// `dir` first) as new-etcd's `copy-credentials`.
fn attach_credentials_of(env: &Env, unit: &str, dir: &std::path::Path) {
    let (code, task) = env.run_action(unit, &["package-client-credentials"]);
    assert_eq!(code, 0, "{task}");
    let to = dir.join(format!("{}-credentials.tar.gz", unit.replace('/', "-")));
    std::fs::copy(
        env.machine_file(unit, task["results"]["path"].as_str().unwrap()),
        &to,
    )
    .unwrap();
    env.ok(&[
        "attach-resource",
        "new-etcd",
        &format!("copy-credentials={}", to.display()),
    ]);
}

#[test]
fn copy_from_brings_another_clusters_keys_in_and_proves_them() {
    let work = tempfile::tempdir().unwrap();
    let t = etcd_tarball(work.path(), &etcd_build("3.5.16"), "3.5.16");
    let env = Env::new("copy", &["update-status-hook-interval=1h"]);
    // The source: the classic charm's shape (the v2 API on), with Trident's keys in v3 and a
    // StorageOS-like tree in v2.
    deploy_healthy(&env, 1, &t, &["--config", "enable_v2=true"]);
    env.ok(&[
        "deploy",
        repo_root().to_str().unwrap(),
        "new-etcd",
        "--resource",
        &format!("etcd={}", t.display()),
    ]);
    env.wait_units(
        "new-etcd",
        1,
        "active",
        "Healthy with 1 known peers",
        2 * MIN,
    );
    let src = Creds::from_unit(&env, "etcd/0");
    let src_ep = unit_endpoint(&env, "etcd/0");
    let dst = Creds::from_unit(&env, "new-etcd/0");
    let dst_ep = unit_endpoint(&env, "new-etcd/0");
    put_many(&src, &src_ep, "/trident/v1/", 10_000);
    for i in 0..5 {
        src.v2(
            &src_ep,
            "PUT",
            &format!("/storageos/volumes/v{i}"),
            Some(&format!("vol {i}")),
        );
    }
    let count_under = |prefix: &str| -> usize {
        let out = dst.etcdctl(
            &dst_ep,
            true,
            &["get", prefix, "--prefix", "--keys-only", "-w", "json"],
        );
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("counting {prefix}: {e}: {out:?}"));
        v["count"].as_u64().unwrap_or(0) as usize
    };
    let endpoints_param = format!("endpoints={src_ep}");
    let copy = |args: &[&str]| {
        let mut a = vec!["copy-from", endpoints_param.as_str()];
        a.extend(args);
        env.run_action("new-etcd/0", &a)
    };

    // Bad input, and the wrong credentials (new-etcd's own): refused, nothing written.
    let (_, task) = copy(&[]);
    assert_refused(&task, "attach the source cluster's client credentials");
    let (_, task) = env.run_action(
        "new-etcd/0",
        &["copy-from", "endpoints=http://10.0.0.1:2379"],
    );
    assert_refused(&task, "is not an https URL");
    attach_credentials_of(&env, "new-etcd/0", work.path());
    let (_, task) = copy(&["prefix=/trident/"]);
    assert_refused(&task, "no source endpoint answers");
    assert_eq!(
        count_under("/trident/"),
        0,
        "nothing written with the wrong credentials"
    );

    // The right ones: a dry run counts, the copy proves itself.
    attach_credentials_of(&env, "etcd/0", work.path());
    let (code, task) = copy(&["prefix=/trident/", "dry-run=true"]);
    assert_eq!(code, 0, "{task}");
    assert_eq!(task["results"]["source"]["count"], "10000", "{task}");
    assert_eq!(count_under("/trident/"), 0, "a dry run writes nothing");
    let dry_digest = task["results"]["source"]["digest"].clone();
    let (code, task) = copy(&["prefix=/trident/"]);
    assert_eq!(code, 0, "{task}");
    let r = &task["results"];
    assert_eq!(r["source"]["count"], "10000", "{task}");
    assert_eq!(r["copied"]["count"], "10000", "{task}");
    assert_eq!(r["copied"]["digest"], r["source"]["digest"], "{task}");
    assert_eq!(r["source"]["digest"], dry_digest);
    assert_eq!(count_under("/trident/"), 10_000);
    let out = dst.etcdctl(
        &dst_ep,
        true,
        &["get", "/trident/v1/04242", "--print-value-only"],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "value-4242");
    // Again: the prefix is taken now.
    let (_, task) = copy(&["prefix=/trident/"]);
    assert_refused(&task, "already has keys under");

    // v2 keys come in as v3 keys of the same path.
    let (code, task) = copy(&["keys-version=v2", "prefix=/storageos"]);
    assert_eq!(code, 0, "{task}");
    assert_eq!(task["results"]["copied"]["count"], "5", "{task}");
    let out = dst.etcdctl(
        &dst_ep,
        true,
        &["get", "/storageos/volumes/v3", "--print-value-only"],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "vol 3");
}
