"""Snapshot and restore of a >= 256 MiB database, each beside its by-hand baseline."""
import json
import os
import pathlib
import subprocess
import time

BASE_SNAPSHOT = r"""
set -e
t0=$(date +%s.%N)
{etcdctl} --endpoints=https://{addr}:2379 --cacert=/etc/etcd/pki/ca.crt --cert=/etc/etcd/pki/client.crt --key=/etc/etcd/pki/client.key snapshot save /root/base.db >/dev/null
gzip -c /root/base.db > /root/base.db.gz
t1=$(date +%s.%N)
echo "$t0 $t1"
"""

BASE_RESTORE = r"""
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


def run(h, inside, row, tarball, wait, FIX, ROOT, HOME):
    tb = tarball(FIX / "etcd-3.5.1", "3.5.1")
    h("add-model", "--no-switch", "bench")
    h("model-config", "update-status-hook-interval=1h")
    h("deploy", str(ROOT), "etcd", "--resource", f"etcd={tb}")
    s = wait(lambda s: s["applications"].get("etcd", {}).get("units", {}).get("etcd/0", {}).get("workload-status", {}).get("message", "").startswith("Healthy"))
    addr = s["machines"]["0"]["dns-name"]
    etcdctl = FIX / "etcd-3.5.1/etcdctl"
    # Fill the database: 272 values of 1 MiB (random, so gzip cannot cheat).
    fill = f"""
import os, subprocess
for i in range(272):
    subprocess.run(["{etcdctl}", "--endpoints=https://{addr}:2379", "--cacert=/etc/etcd/pki/ca.crt", "--cert=/etc/etcd/pki/client.crt",
                    "--key=/etc/etcd/pki/client.key", "put", f"/fill/{{i:04}}"], input=os.urandom(1 << 20), check=True, capture_output=True)
print("ok")
"""
    inside("etcd/0", fill)
    t = time.perf_counter()
    out = json.loads(h("run", "--format", "json", "etcd/0", "snapshot", "target=/root/snaps"))
    snap_s = time.perf_counter() - t
    res = out["etcd/0"]["results"]["snapshot"]
    t0, t1 = map(float, h("exec", "--unit", "etcd/0", "--", BASE_SNAPSHOT.format(etcdctl=etcdctl, addr=addr)).split())
    db_mb = int(h("exec", "--unit", "etcd/0", "--", "stat -c %s /root/base.db")) / 2**20
    row(f"snapshot action ({db_mb:.0f} MiB db, archive {int(res['size']) / 2**20:.0f} MiB)", snap_s, "s", "etcdctl snapshot save + gzip", t1 - t0, "<= 1x")

    pid = json.loads(h("show-machine", "0", "--format", "json"))["0"]["init-pid"]
    local = pathlib.Path(HOME) / "snap.tar.gz"
    subprocess.run(["cp", f"/proc/{pid}/root{res['path']}", str(local)], check=True)
    h("attach-resource", "etcd", f"snapshot={local}")
    h("wait-settled", "--timeout", "5m")
    t = time.perf_counter()
    out = json.loads(h("run", "--format", "json", "etcd/0", "restore"))
    restore_s = time.perf_counter() - t
    for line in out["etcd/0"].get("log", []):
        print("   ", line)
    t0, t1 = map(float, h("exec", "--unit", "etcd/0", "--", BASE_RESTORE.format(etcdutl=FIX / "etcd-3.5.1/etcdutl", etcd=FIX / "etcd-3.5.1/etcd")).split())
    row("restore action on one unit (verify, restore, swap, start, check)", restore_s, "s", "etcdutl snapshot restore + start etcd by hand", t1 - t0, "within 1.5x")
