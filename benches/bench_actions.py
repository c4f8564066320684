"""Snapshot and restore beside what an operator does by hand, in the same run, alternated.

- snapshot action (whole `juju run`, from the host) vs `etcdctl snapshot save` alone, on
  256 MiB and 1 GiB of random values and 256 MiB of compressible ones; the peak RSS of the
  action's process (the agent's wait4) vs etcdctl's; `cp` + fsync of the db file for scale.
- restore action on one unit vs `etcdutl snapshot restore` + starting etcd by hand.
"""
import json
import pathlib
import re
import subprocess
import time

RESTORE_BY_HAND = r"""
set -e
rm -rf /root/restored
t0=$(date +%s.%N)
{etcdutl} snapshot restore /root/base.db --data-dir /root/restored --name by-hand --initial-cluster by-hand=http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 >/dev/null 2>&1
nohup {etcd} --name by-hand --data-dir /root/restored --listen-client-urls http://127.0.0.1:23790 --advertise-client-urls http://127.0.0.1:23790 --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 --initial-cluster by-hand=http://127.0.0.1:23800 >/root/by-hand.log 2>&1 &
pid=$!
until curl -s http://127.0.0.1:23790/health | grep -q true; do sleep 0.01; done
t1=$(date +%s.%N)
kill $pid; wait $pid 2>/dev/null || true
rm -rf /root/restored
echo "$t0 $t1"
"""

# Values written by etcdctl inside the unit: `count` of 1 MiB each, random or compressible
# (text with a few random bytes per line, roughly 4:1 under gzip -1).
FILL = r"""
import os, random, subprocess
ctl = ["{etcdctl}", "--endpoints=https://{addr}:2379", "--cacert=/etc/etcd/pki/ca.crt",
       "--cert=/etc/etcd/pki/client.crt", "--key=/etc/etcd/pki/client.key"]
def value(i):
    if {random}:
        return os.urandom(1 << 20)
    line = lambda n: b'{{"pod":"web-%06d","node":"worker-%02d","phase":"Running","ip":"10.%d.%d.%d"}}\n' % (
        n, n % 40, random.randrange(256), random.randrange(256), random.randrange(256))
    out = bytearray()
    n = i * 20000
    while len(out) < (1 << 20):
        out += line(n)
        n += 1
    return bytes(out[: 1 << 20])
import time
for i in range({count}):
    v = value(i)
    for attempt in range(10):  # a member still settling after its deploy
        r = subprocess.run(ctl + ["put", f"/fill/{{i:05}}"], input=v, capture_output=True)
        if r.returncode == 0:
            break
        time.sleep(1)
    else:
        raise SystemExit(r.stderr.decode())
print("ok")
"""

# Runs in the unit: one timed run of argv with its peak RSS (wait4), as JSON.
ONE = r"""
import json, os, subprocess, time
argv = {argv}
t = time.perf_counter()
p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
_, status, ru = os.wait4(p.pid, 0)
assert status == 0, f"{{argv}} failed: {{status}}"
print(json.dumps({{"s": time.perf_counter() - t, "rss_mb": ru.ru_maxrss / 1024}}))
"""

RAN = re.compile(r'unit-(\S+): INFO ran "snapshot" action \(exit 0, (\d+) ms, peak RSS ([\d.]+) MiB\)')


def run(h, inside, row, tarball, wait, FIX, ROOT, HOME, restore_only=False):
    tb = tarball(FIX / "etcd-3.5.1", "3.5.1")
    etcdctl = FIX / "etcd-3.5.1/etcdctl"
    h("add-model", "--no-switch", "bench")
    h("model-config", "update-status-hook-interval=1h")
    datasets = [("256 MiB random", 256, True), ("256 MiB compressible", 256, False), ("1 GiB random", 1024, True)]
    if restore_only:
        # `restore1`: the restore alone, more rounds (its figure is the noisiest).
        datasets = datasets[:1]
    kept = None
    for i, (name, mib, rnd) in enumerate(datasets):
        app = f"etcd{i}"
        h("deploy", str(ROOT), app, "--resource", f"etcd={tb}", "--config", "quota_backend_bytes=4294967296")
        s = wait(lambda s: s["applications"].get(app, {}).get("units", {}).get(f"{app}/0", {})
                 .get("workload-status", {}).get("message", "").startswith("Healthy"))
        unit = f"{app}/0"
        machine = s["applications"][app]["units"][unit]["machine"]
        addr = s["machines"][machine]["dns-name"]
        inside(unit, FILL.format(etcdctl=etcdctl, addr=addr, random=rnd, count=mib))
        save = [str(etcdctl), f"--endpoints=https://{addr}:2379", "--cacert=/etc/etcd/pki/ca.crt",
                "--cert=/etc/etcd/pki/client.crt", "--key=/etc/etcd/pki/client.key", "snapshot", "save", "/root/base.db"]
        copy = ["sh", "-c", "dd if=$(sed -n \"s/^data-dir: '\\?\\([^']*\\)'\\?$/\\1/p\" /etc/etcd/etcd.conf.yml)/member/snap/db "
                "of=/root/copy.db bs=4M conv=fsync status=none"]
        action, action_rss, base, base_rss, cp = [], [], [], [], []
        for _ in range(1 if restore_only else 2):
            h("exec", "--unit", unit, "--", "rm -rf /root/snaps /root/base.db /root/copy.db; sync")
            t = time.perf_counter()
            out = json.loads(h("run", "--format", "json", unit, "snapshot", "target=/root/snaps"))
            action.append(time.perf_counter() - t)
            res = out[unit]["results"]["snapshot"]
            ran = [m for m in RAN.finditer(h("debug-log")) if m.group(1) == unit.replace("/", "-")]
            action_rss.append(float(ran[-1].group(3)))
            h("exec", "--unit", unit, "--", "sync")
            b = json.loads(inside(unit, ONE.format(argv=json.dumps(save))))
            base.append(b["s"])
            base_rss.append(b["rss_mb"])
            c = json.loads(inside(unit, ONE.format(argv=json.dumps(copy))))
            cp.append(c["s"])
        db_mb = int(h("exec", "--unit", unit, "--", "stat -c %s /root/base.db")) / 2**20
        label = f"{name} ({db_mb:.0f} MiB db, archive {int(res['size']) / 2**20:.0f} MiB)"
        if not restore_only:
            row(f"snapshot action, {label}", min(action), "s", "etcdctl snapshot save", min(base), "<= 1x")
            row(f"snapshot action peak RSS, {name}", max(action_rss), "MB", "etcdctl snapshot save", max(base_rss), "<= 1x")
            row(f"snapshot action, {name}", min(action), "s", "dd of the db file with fsync (the disk's bound)", min(cp), "report")
        if i == 0:
            kept = (unit, res["path"], machine)
        else:
            h("remove-application", app)

    # Restore on one unit: the first dataset's archive attached as the snapshot resource.
    unit, path, machine = kept
    app = unit.split("/")[0]
    pid = json.loads(h("show-machine", machine, "--format", "json"))[machine]["init-pid"]
    local = pathlib.Path(HOME) / "snap.tar.gz"
    subprocess.run(["cp", f"/proc/{pid}/root{path}", str(local)], check=True)
    h("attach-resource", app, f"snapshot={local}")
    h("wait-settled", "--timeout", "5m")
    restore, by_hand = [], []
    # Five rounds: the restore's figure is the noisiest of the two (see PERFORMANCE.md).
    for _ in range(5):
        t = time.perf_counter()
        out = json.loads(h("run", "--format", "json", unit, "restore"))
        restore.append(time.perf_counter() - t)
        for line in out[unit].get("log", []):
            print("   ", line)
        # The old data is deleted after the action answers: not while the baseline runs.
        h("exec", "--unit", unit, "--", "while ls -d /var/lib/etcd/.trash-* >/dev/null 2>&1; do sleep 0.05; done; sync")
        t0, t1 = map(float, h("exec", "--unit", unit, "--", RESTORE_BY_HAND.format(
            etcdutl=FIX / "etcd-3.5.1/etcdutl", etcd=FIX / "etcd-3.5.1/etcd")).split())
        by_hand.append(t1 - t0)
        print(f"    restore action {restore[-1]:.2f} s, by hand {by_hand[-1]:.2f} s", flush=True)
    row("restore action on one unit (verify, restore, swap, start, check)", min(restore), "s",
        "etcdutl snapshot restore + start etcd by hand", min(by_hand), "<= 1x")


# By hand on three machines, as etcd's recovery guide has it, with the units' own TLS files:
# restore on the first and start it, then `member add` each other one and start it empty.
HAND_FIRST = r"""
set -e
P=/etc/etcd/pki
[ -f /root/bh.pid ] && kill $(cat /root/bh.pid) 2>/dev/null || true; rm -rf /root/bh /root/bh.pid
{etcdutl} snapshot restore /root/base.db --data-dir /root/bh --name bh-0 --initial-cluster bh-0=https://{a0}:23800 --initial-advertise-peer-urls https://{a0}:23800 --initial-cluster-token {token} >/dev/null 2>&1
setsid nohup {etcd} --name bh-0 --data-dir /root/bh --listen-client-urls https://{a0}:23790 --advertise-client-urls https://{a0}:23790 --listen-peer-urls https://{a0}:23800 --initial-advertise-peer-urls https://{a0}:23800 --initial-cluster bh-0=https://{a0}:23800 --initial-cluster-token {token} --cert-file $P/server.crt --key-file $P/server.key --trusted-ca-file $P/ca.crt --client-cert-auth --peer-cert-file $P/peer.crt --peer-key-file $P/peer.key --peer-trusted-ca-file $P/ca.crt --peer-client-cert-auth </dev/null >/root/bh.log 2>&1 &
echo $! > /root/bh.pid
until curl -s --cacert $P/ca.crt --cert $P/client.crt --key $P/client.key https://{a0}:23790/health | grep -q true; do sleep 0.01; done
"""

HAND_ADD = r"""
set -e
P=/etc/etcd/pki
# etcd refuses a new member until every member has been connected for a while: retry, as
# an operator would.
until {etcdctl} --endpoints https://{a0}:23790 --cacert $P/ca.crt --cert $P/client.crt --key $P/client.key member add bh-{i} --peer-urls https://{ai}:23800 >/dev/null 2>&1; do sleep 0.1; done
"""

HAND_JOIN = r"""
set -e
P=/etc/etcd/pki
[ -f /root/bh.pid ] && kill $(cat /root/bh.pid) 2>/dev/null || true; rm -rf /root/bh /root/bh.pid
setsid nohup {etcd} --name bh-{i} --data-dir /root/bh --listen-client-urls https://{ai}:23790 --advertise-client-urls https://{ai}:23790 --listen-peer-urls https://{ai}:23800 --initial-advertise-peer-urls https://{ai}:23800 --initial-cluster {cluster} --initial-cluster-state existing --initial-cluster-token {token} --cert-file $P/server.crt --key-file $P/server.key --trusted-ca-file $P/ca.crt --client-cert-auth --peer-cert-file $P/peer.crt --peer-key-file $P/peer.key --peer-trusted-ca-file $P/ca.crt --peer-client-cert-auth </dev/null >/root/bh.log 2>&1 &
echo $! > /root/bh.pid
until curl -s --cacert $P/ca.crt --cert $P/client.crt --key $P/client.key https://{ai}:23790/health | grep -q true; do sleep 0.01; done
"""

HAND_STOP = r"""
if [ -f /root/bh.pid ]; then
  p=$(cat /root/bh.pid); kill $p 2>/dev/null
  while kill -0 $p 2>/dev/null; do sleep 0.05; done
fi
rm -rf /root/bh /root/bh.pid
"""

# The charm's cluster as its members see it: the cluster ID and the started, healthy members.
MEMBERS = r"""
set -e
P=/etc/etcd/pki
{etcdctl} --endpoints https://{a0}:2379 --cacert $P/ca.crt --cert $P/client.crt --key $P/client.key --command-timeout=2s endpoint health --cluster >/dev/null 2>&1
{etcdctl} --endpoints https://{a0}:2379 --cacert $P/ca.crt --cert $P/client.crt --key $P/client.key --command-timeout=2s member list -w json
"""


def run_restore3(h, inside, row, tarball, wait, FIX, ROOT, HOME):
    """3-unit restore: the action's start to three healthy members of the restored cluster,
    beside the by-hand procedure on the same machines (other ports), alternated."""
    tb = tarball(FIX / "etcd-3.5.1", "3.5.1")
    etcdctl, etcdutl, etcd = (FIX / f"etcd-3.5.1/{b}" for b in ("etcdctl", "etcdutl", "etcd"))
    h("add-model", "--no-switch", "bench")
    h("model-config", "update-status-hook-interval=1h")
    app = "etcd"
    h("deploy", str(ROOT), app, "-n", "3", "--resource", f"etcd={tb}", "--config", "quota_backend_bytes=4294967296")
    units = [f"{app}/{i}" for i in range(3)]

    def healthy3(s):
        us = s["applications"].get(app, {}).get("units", {})
        return len(us) == 3 and all(u.get("workload-status", {}).get("message", "") == "Healthy with 3 known peers"
                                    and u.get("juju-status", {}).get("current") == "idle" for u in us.values())
    s = wait(healthy3)
    addr = {u: s["machines"][s["applications"][app]["units"][u]["machine"]]["dns-name"] for u in units}
    a0 = addr[units[0]]
    inside(units[0], FILL.format(etcdctl=etcdctl, addr=a0, random=True, count=256))
    out = json.loads(h("run", "--format", "json", units[0], "snapshot", "target=/root/snaps"))
    path = out[units[0]]["results"]["snapshot"]["path"]
    save = [str(etcdctl), f"--endpoints=https://{a0}:2379", "--cacert=/etc/etcd/pki/ca.crt",
            "--cert=/etc/etcd/pki/client.crt", "--key=/etc/etcd/pki/client.key", "snapshot", "save", "/root/base.db"]
    inside(units[0], ONE.format(argv=json.dumps(save)))
    machine = s["applications"][app]["units"][units[0]]["machine"]
    pid = json.loads(h("show-machine", machine, "--format", "json"))[machine]["init-pid"]
    local = pathlib.Path(HOME) / "snap3.tar.gz"
    subprocess.run(["cp", f"/proc/{pid}/root{path}", str(local)], check=True)
    h("attach-resource", app, f"snapshot={local}")
    h("wait-settled", "--timeout", "5m")

    def cluster():
        """(cluster ID, started members) when every member answers healthy, else None."""
        out = h("exec", "--unit", units[0], "--", MEMBERS.format(etcdctl=etcdctl, a0=a0), check=False)
        try:
            v = json.loads(out.splitlines()[0])
        except (ValueError, IndexError):
            return None
        started = [m for m in v.get("members", []) if m.get("name")]
        return v["header"]["cluster_id"], len(started)

    action, by_hand = [], []
    for n in range(2):
        token = f"by-hand-{n}"
        before = cluster()
        t = time.perf_counter()
        h("run", "--format", "json", units[0], "restore")
        end = time.monotonic() + 600
        while True:
            c = cluster()
            if c and c[0] != before[0] and c[1] == 3 and healthy3(json.loads(h("status", "--format", "json"))):
                break
            if time.monotonic() > end:
                raise SystemExit("the restored cluster did not come back:\n" + h("status"))
            time.sleep(0.05)
        action.append(time.perf_counter() - t)
        print(f"    restore action to three healthy members: {action[-1]:.2f} s", flush=True)

        t = time.perf_counter()
        h("exec", "--unit", units[0], "--", HAND_FIRST.format(etcdutl=etcdutl, etcd=etcd, a0=a0, token=token))
        cluster_str = f"bh-0=https://{a0}:23800"
        for i in (1, 2):
            ai = addr[units[i]]
            h("exec", "--unit", units[0], "--", HAND_ADD.format(etcdctl=etcdctl, a0=a0, ai=ai, i=i))
            cluster_str += f",bh-{i}=https://{ai}:23800"
            h("exec", "--unit", units[i], "--", HAND_JOIN.format(etcd=etcd, ai=ai, i=i, cluster=cluster_str, token=token))
        by_hand.append(time.perf_counter() - t)
        print(f"    by hand to three healthy members: {by_hand[-1]:.2f} s", flush=True)
        for u in units:
            h("exec", "--unit", u, "--", HAND_STOP)
    row("restore action on 3 units (action start to 3 healthy members of the restored cluster)", min(action), "s",
        "etcdutl restore on one, member add + start of two (by hand)", min(by_hand), "report")

