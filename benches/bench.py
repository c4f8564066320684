#!/usr/bin/env python3
"""Benchmarks with a baseline measured side by side in the same run; prints ratios.

    python3 benches/bench.py harness   # controller: hook tool, empty hook, 10-unit deploy, RSS
    python3 benches/bench.py machines  # boot time and memory of a systemd machine beside a namespace one
    python3 benches/bench.py charm     # update-status vs etcdctl; deploy -n 3 vs a bare bootstrap
    python3 benches/bench.py charm-auth  # update-status with etcd authentication on (etcd-client)
    python3 benches/bench.py actions   # snapshot and restore of a 256 MiB database
    python3 benches/bench.py restore1  # the one-unit restore alone, five rounds
    python3 benches/bench.py restore3  # restore of a 256 MiB database on 3 units vs by hand
    python3 benches/bench.py backup    # snapshot upload=true to S3 vs etcdctl + s3cmd, 256 MiB and 1 GiB
Needs root, a release build (cargo build --release --workspace) and tests/setup.sh.
"""
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
H = str(ROOT / "target/release/charm-harness")
FIX = pathlib.Path(os.environ.get("ETCD_CHARM_FIXTURES", "/var/cache/etcd-charm-test"))
HOME = tempfile.mkdtemp(prefix="bench-", dir="/tmp")
ENV = dict(os.environ, CHARM_HARNESS_HOME=HOME, JUJU_MODEL="bench")
ROWS = []


def h(*args, check=True):
    r = subprocess.run([H, *args], env=ENV, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise SystemExit(f"charm-harness {args} failed: {r.stdout}{r.stderr}")
    return r.stdout


def row(what, value, unit, baseline_what, baseline, target):
    ratio = value / baseline if baseline else float("nan")
    ROWS.append((what, value, unit, baseline_what, baseline, ratio, target))
    print(f"{what}: {value:.2f} {unit} | baseline {baseline_what}: {baseline:.2f} {unit} | ratio {ratio:.2f} | target {target}", flush=True)


def inside(unit, script):
    """Runs a Python snippet inside a unit's machine, with the unit's hook context."""
    import base64
    b64 = base64.b64encode(script.encode()).decode()
    return h("exec", "--unit", unit, "--", f"echo {b64} | base64 -d | /usr/bin/python3 -")


def status():
    return json.loads(h("status", "--format", "json"))


def wait(cond, timeout=300):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        s = status()
        if cond(s):
            return s
        time.sleep(0.05)
    raise SystemExit("timed out:\n" + h("status"))


def tarball(version_dir, version):
    d = pathlib.Path(HOME) / "tb"
    top = d / f"etcd-v{version}-linux-amd64"
    top.mkdir(parents=True, exist_ok=True)
    for f in version_dir.iterdir():
        shutil.copy(f, top / f.name)
    out = d / f"etcd-v{version}-linux-amd64.tar.gz"
    subprocess.run(["tar", "-C", str(d), "-czf", str(out), top.name], check=True)
    return out


TIMER = r"""
import json, os, statistics, subprocess, time
def measure(argv, n, env=None):
    times, rss = [], []
    for _ in range(n):
        t = time.perf_counter()
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        _, status, ru = os.wait4(p.pid, 0)
        times.append((time.perf_counter() - t) * 1000)
        rss.append(ru.ru_maxrss / 1024)
    return {"median_ms": statistics.median(times), "max_rss_mb": max(rss)}
"""


def ten_bare_namespaces():
    """The 10-unit deploy's baseline: seconds for 10 x (netns add + unshare true + netns del)."""
    t = time.perf_counter()
    for i in range(10):
        subprocess.run(["ip", "netns", "add", f"benchns{i}"], check=True)
        subprocess.run(["unshare", "--mount", "--uts", "--pid", "--fork", "--mount-proc", "true"], check=True)
        subprocess.run(["ip", "netns", "del", f"benchns{i}"], check=True)
    return time.perf_counter() - t


def bench_harness():
    h("add-model", "--no-switch", "bench")
    h("model-config", "update-status-hook-interval=1h")
    h("deploy", str(ROOT / "tests/charms/probe"), "probe")
    h("wait-settled", "--timeout", "2m")
    out = json.loads(inside("probe/0", TIMER + """
print(json.dumps({"tool": measure(["is-leader", "--format=json"], 200), "true": measure(["/bin/true"], 200)}))
"""))
    row("hook tool call (is-leader, whole process)", out["tool"]["median_ms"], "ms", "/bin/true", out["true"]["median_ms"], "median < 5 ms")

    h("deploy", str(ROOT / "tests/charms/noop"), "noop")
    h("wait-settled", "--timeout", "2m")
    times = []
    for _ in range(30):
        t = time.perf_counter()
        h("exec", "--unit", "noop/0", "--", "true")
        times.append((time.perf_counter() - t) * 1000)
    base = []
    for _ in range(30):
        t = time.perf_counter()
        subprocess.run(["/bin/sh", "-c", "true"], check=True)
        base.append((time.perf_counter() - t) * 1000)
    row("empty hook end to end (juju exec via CLI, controller, agent, commit)", statistics.median(times), "ms", "sh -c true on the host", statistics.median(base), "< 20 ms")

    t = time.perf_counter()
    h("deploy", str(ROOT / "tests/charms/noop"), "ten", "-n", "10")
    h("wait-settled", "--timeout", "5m")
    deploy_s = time.perf_counter() - t
    base_s = ten_bare_namespaces()
    row("10-unit deploy of a no-op charm until settled", deploy_s, "s", "10 x (netns add + unshare true + netns del)", base_s, "< 3 s")

    pid = int((pathlib.Path(HOME) / "run/controller.pid").read_text())
    time.sleep(1)
    rss = int([l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0].split()[1]) / 1024
    p = subprocess.Popen(["/usr/bin/python3", "-c", "import time; time.sleep(30)"])
    time.sleep(0.5)
    base = int([l for l in open(f"/proc/{p.pid}/status") if l.startswith("VmRSS")][0].split()[1]) / 1024
    p.kill()
    row("controller RSS idle (13 units in 3 apps)", rss, "MB", "an idle python3 process", base, "< 30 MB")


def machine_memory_mb(init_pid):
    """PSS of every process in a machine's PID namespace, in MB."""
    ns = os.readlink(f"/proc/{init_pid}/ns/pid")
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{d}/ns/pid") != ns:
                continue
            for line in open(f"/proc/{d}/smaps_rollup"):
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def bench_machines():
    """Boot time and memory of each machine kind (median of 10, alternated), and a 10-unit
    no-op deploy on each."""
    h("add-model", "--no-switch", "bench")
    h("model-config", "update-status-hook-interval=1h")
    kinds = ["namespace", "systemd"]
    for k in kinds:
        h("model-config", f"harness-machine={k}")
        h("deploy", str(ROOT / "tests/charms/noop"), k)
    h("wait-settled", "--timeout", "2m")
    ready = {"namespace": "true", "systemd": "systemctl is-system-running --wait >/dev/null"}
    boots = {k: [] for k in kinds}
    mem = {k: [] for k in kinds}
    for _ in range(10):
        for k in kinds:
            machine = json.loads(h("show-unit", f"{k}/0", "--format", "json"))[f"{k}/0"]["machine"]
            h("crash-machine", machine)
            t = time.perf_counter()
            h("start-machine", machine)
            h("exec", "--unit", f"{k}/0", "--", ready[k])
            boots[k].append(time.perf_counter() - t)
            init = json.loads(h("show-machine", machine, "--format", "json"))[machine]["init-pid"]
            mem[k].append(machine_memory_mb(init))
    med = {k: statistics.median(v) for k, v in boots.items()}
    row("systemd machine boot (start-machine until is-system-running says running)", med["systemd"] * 1000, "ms",
        "namespace machine (start-machine until exec answers)", med["namespace"] * 1000, "report")
    memo = {k: statistics.median(v) for k, v in mem.items()}
    row("systemd machine memory after boot (PSS of its processes)", memo["systemd"], "MB",
        "namespace machine", memo["namespace"], "report")
    for k, target in (("namespace", "< 3 s"), ("systemd", "< 10 s")):
        h("model-config", f"harness-machine={k}")
        t = time.perf_counter()
        h("deploy", str(ROOT / "tests/charms/noop"), f"ten-{k}", "-n", "10")
        h("wait-settled", "--timeout", "5m")
        deploy_s = time.perf_counter() - t
        base_s = ten_bare_namespaces()
        row(f"10-unit deploy of a no-op charm until settled, {k} machines", deploy_s, "s",
            "10 x (netns add + unshare true + netns del)", base_s, target)
        h("remove-application", f"ten-{k}")
        h("wait-settled", "--timeout", "2m")


def bench_charm():
    tb = tarball(FIX / "etcd-3.5.1", "3.5.1")
    h("add-model", "--no-switch", "bench")
    h("model-config", "update-status-hook-interval=1h")
    t0 = time.perf_counter()
    h("deploy", str(ROOT), "etcd", "-n", "3", "--resource", f"etcd={tb}")
    s = wait(lambda s: all(m["juju-status"]["current"] == "started" for m in s["machines"].values()) and len(s["machines"]) == 3)
    t_machines = time.perf_counter()
    wait(lambda s: all(u["workload-status"]["message"] == "Healthy with 3 known peers" for u in s["applications"]["etcd"]["units"].values()))
    t_active = time.perf_counter()
    log = h("debug-log")
    first_install = next(l for l in log.splitlines() if '"install" hook' in l)
    print(f"  (machines ready after {t_machines - t0:.2f} s; first install: {first_install})")
    deploy_s = t_active - t_machines
    base_s = bare_bootstrap()
    row("deploy -n 3 from machines ready (first install) to all active", deploy_s, "s", "bare static TLS bootstrap of 3 members by hand", base_s, "within 2x")

    # How the hook's cost grows with the cluster: update-status on 3, 5 and 7 units beside
    # `etcdctl endpoint health --cluster` on the same cluster (median of 20, whole process).
    for n in (3, 5, 7):
        if n > 3:
            h("add-unit", "etcd", "-n", "2")
            wait(lambda s: len(s["applications"]["etcd"]["units"]) == n and all(
                u["workload-status"]["message"] == f"Healthy with {n} known peers"
                for u in s["applications"]["etcd"]["units"].values()), timeout=600)
            h("wait-settled", "--timeout", "5m")
            s = status()
        update_status_rows(s, n, "")


def update_status_rows(s, n, label):
    """update-status on etcd/0 beside `etcdctl endpoint health --cluster` (median of 20)."""
    addr = s["machines"]["0"]["dns-name"]
    out = json.loads(inside("etcd/0", TIMER + f"""
charm = os.environ["JUJU_CHARM_DIR"] + "/target/release/etcd-charm"
env = dict(os.environ, JUJU_DISPATCH_PATH="hooks/update-status")
ctl = ["{FIX}/etcd-3.5.1/etcdctl", "--endpoints=https://{addr}:2379", "--cacert=/etc/etcd/pki/ca.crt",
       "--cert=/etc/etcd/pki/client.crt", "--key=/etc/etcd/pki/client.key", "endpoint", "health", "--cluster"]
hook, base = [], []
for _ in range(20):
    hook.append(measure([charm], 1, env))
    base.append(measure(ctl, 1))
med = lambda xs, k: statistics.median(x[k] for x in xs)
print(json.dumps({{"hook": {{"median_ms": med(hook, "median_ms"), "max_rss_mb": max(x["max_rss_mb"] for x in hook)}},
              "etcdctl": {{"median_ms": med(base, "median_ms"), "max_rss_mb": max(x["max_rss_mb"] for x in base)}}}}))
"""))
    row(f"update-status hook{label}, {n} units (whole process, median of 20)", out["hook"]["median_ms"], "ms",
        "etcdctl endpoint health --cluster", out["etcdctl"]["median_ms"], "<= 1x at every size")
    row(f"update-status hook peak memory{label}, {n} units", out["hook"]["max_rss_mb"], "MB",
        "etcdctl endpoint health --cluster", out["etcdctl"]["max_rss_mb"], "flat")


def bench_charm_auth():
    """update-status once etcd-client turned authentication on (the charm's requests over
    gRPC as root) beside etcdctl's health check with the shared client certificate."""
    tb = tarball(FIX / "etcd-3.5.1", "3.5.1")
    h("add-model", "--no-switch", "bench")
    h("model-config", "update-status-hook-interval=1h")
    h("deploy", str(ROOT), "etcd", "-n", "3", "--resource", f"etcd={tb}",
      "--config", "etcd_client_allow_vulnerable_etcd=true")
    h("deploy", str(ROOT / "tests/charms/tls-v4-probe"))
    h("deploy", str(ROOT / "tests/charms/etcd-client-probe"), "client-a", "--config", "prefix=/a/")
    h("integrate", "etcd", "tls-v4-probe")
    h("integrate", "client-a:certificates", "tls-v4-probe:certificates")
    h("integrate", "etcd", "client-a")
    s = wait(lambda s: s["applications"].get("client-a", {}).get("units", {}).get("client-a/0", {})
             .get("workload-status", {}).get("message", "").startswith("served as")
             and all(u["workload-status"]["message"] == "Healthy with 3 known peers"
                     for u in s["applications"]["etcd"]["units"].values()), timeout=600)
    h("wait-settled", "--timeout", "5m")
    update_status_rows(status(), 3, " with authentication on")


def bare_bootstrap():
    """3 etcd members with TLS on loopback, started together by hand; time to all healthy."""
    d = pathlib.Path(tempfile.mkdtemp(prefix="bare-", dir="/tmp"))
    ossl = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)
    ossl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", d / "ca.key")
    ossl("req", "-x509", "-new", "-key", d / "ca.key", "-subj", "/CN=bare-ca", "-days", "2", "-out", d / "ca.crt")
    ext = d / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    ossl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", d / "m.key")
    ossl("req", "-new", "-key", d / "m.key", "-subj", "/CN=member", "-out", d / "m.csr")
    ossl("x509", "-req", "-in", d / "m.csr", "-CA", d / "ca.crt", "-CAkey", d / "ca.key", "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", d / "m.crt")
    etcd = str(FIX / "etcd-3.5.1/etcd")
    ports = [(23790 + i * 10, 23791 + i * 10) for i in range(3)]
    cluster = ",".join(f"m{i}=https://127.0.0.1:{p}" for i, (_, p) in enumerate(ports))
    tls = ["--cert-file", d / "m.crt", "--key-file", d / "m.key", "--trusted-ca-file", d / "ca.crt", "--client-cert-auth",
           "--peer-cert-file", d / "m.crt", "--peer-key-file", d / "m.key", "--peer-trusted-ca-file", d / "ca.crt", "--peer-client-cert-auth"]
    procs = []
    t = time.perf_counter()
    for i, (c, p) in enumerate(ports):
        procs.append(subprocess.Popen([etcd, "--name", f"m{i}", "--data-dir", d / f"m{i}", "--listen-client-urls", f"https://127.0.0.1:{c}",
                                       "--advertise-client-urls", f"https://127.0.0.1:{c}", "--listen-peer-urls", f"https://127.0.0.1:{p}",
                                       "--initial-advertise-peer-urls", f"https://127.0.0.1:{p}", "--initial-cluster", cluster,
                                       "--initial-cluster-state", "new", "--initial-cluster-token", "bare", *map(str, tls)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    eps = ",".join(f"https://127.0.0.1:{c}" for c, _ in ports)
    while True:
        r = subprocess.run([str(FIX / "etcd-3.5.1/etcdctl"), f"--endpoints={eps}", f"--cacert={d}/ca.crt", f"--cert={d}/m.crt", f"--key={d}/m.key",
                            "endpoint", "health", "--dial-timeout=1s"], capture_output=True)
        if r.returncode == 0:
            break
        if time.perf_counter() - t > 60:
            raise SystemExit("the bare cluster did not come up")
        time.sleep(0.02)
    elapsed = time.perf_counter() - t
    for p in procs:
        p.terminate()
        p.wait()
    shutil.rmtree(d)
    return elapsed


def main():
    what = sys.argv[1:] or ["harness", "charm"]
    try:
        for w in what:
            actions = __import__("bench_actions")
            backup = __import__("bench_backup")
            {
                "harness": bench_harness,
                "machines": bench_machines,
                "charm": bench_charm,
                "charm-auth": bench_charm_auth,
                "actions": lambda: actions.run(h, inside, row, tarball, wait, FIX, ROOT, HOME),
                "restore1": lambda: actions.run(h, inside, row, tarball, wait, FIX, ROOT, HOME, restore_only=True),
                "restore3": lambda: actions.run_restore3(h, inside, row, tarball, wait, FIX, ROOT, HOME),
                "backup": lambda: backup.run(h, inside, row, tarball, wait, FIX, ROOT, HOME),
            }[w]()
            h("destroy-model", "bench", "--no-prompt", check=False)
    except BaseException:
        # What the model was doing when the run failed (the home goes below).
        log = subprocess.run([H, "debug-log", "--replay"], env=ENV,
                             capture_output=True, text=True).stdout.splitlines()
        print("\nthe model's debug log, last lines:", *log[-120:], sep="\n", file=sys.stderr)
        r = subprocess.run([H, "status", "--format", "yaml"], env=ENV, capture_output=True, text=True)
        print(f"\n$ juju status --format yaml\n{r.stdout}{r.stderr}", file=sys.stderr)
        raise
    finally:
        subprocess.run([H, "kill-controller"], env=ENV, capture_output=True)
        shutil.rmtree(HOME, ignore_errors=True)
    print("\n| benchmark | value | baseline | ratio | target |\n|---|---|---|---|---|")
    for what, v, unit, bw, b, ratio, target in ROWS:
        print(f"| {what} | {v:.2f} {unit} | {bw}: {b:.2f} {unit} | {ratio:.2f} | {target} |")


if __name__ == "__main__":
    main()
