"""An off-machine backup beside what an operator does by hand, in the same run, alternated.

- `snapshot upload=true` (the whole `juju run` from the host: the archive written, uploaded
  in parts, read back whole and compared, its record written) vs `etcdctl snapshot save`
  followed by `s3cmd put` of the file (an ordinary S3 client, multipart), inside the unit,
  on 256 MiB and 1 GiB of random values; the bucket is SeaweedFS on the s3-probe's machine.
- the action's peak RSS (the agent's wait4) at both sizes: it should stay flat.
"""
import json
import time

from bench_actions import FILL, ONE, RAN

S3CFG = """[default]
access_key = etcd-access
secret_key = etcd-secret-key-0123456789
host_base = {addr}:8333
host_bucket = {addr}:8333
use_https = False
signature_v2 = False
bucket_location = us-east-1
"""


def run(h, inside, row, tarball, wait, FIX, ROOT, HOME):
    tb = tarball(FIX / "etcd-3.5.1", "3.5.1")
    etcdctl = FIX / "etcd-3.5.1/etcdctl"
    h("add-model", "--no-switch", "bench")
    h("model-config", "update-status-hook-interval=1h")
    h("deploy", str(ROOT / "tests/charms/s3-probe"))
    s = wait(lambda s: s["applications"].get("s3-probe", {}).get("units", {}).get("s3-probe/0", {})
             .get("workload-status", {}).get("message", "").startswith("serving S3"))
    probe_addr = s["machines"][s["applications"]["s3-probe"]["units"]["s3-probe/0"]["machine"]]["dns-name"]
    rss = {}
    for i, (name, mib) in enumerate([("256 MiB random", 256), ("1 GiB random", 1024)]):
        app = f"etcd{i}"
        h("deploy", str(ROOT), app, "--resource", f"etcd={tb}", "--config", "quota_backend_bytes=4294967296")
        h("integrate", f"{app}:s3-credentials", "s3-probe:s3-credentials")
        s = wait(lambda s: s["applications"].get(app, {}).get("units", {}).get(f"{app}/0", {})
                 .get("workload-status", {}).get("message", "").startswith("Healthy"))
        unit = f"{app}/0"
        addr = s["machines"][s["applications"][app]["units"][unit]["machine"]]["dns-name"]
        inside(unit, FILL.format(etcdctl=etcdctl, addr=addr, random=True, count=mib))
        end = time.monotonic() + 120  # until the provider's bucket reached the unit
        while json.loads(h("run", "--format", "json", unit, "list-backups"))[unit]["status"] != "completed":
            assert time.monotonic() < end, "the s3-credentials relation did not settle"
            time.sleep(0.5)
        h("exec", "--unit", unit, "--", f"printf '%s' '{S3CFG.format(addr=probe_addr)}' > /root/.s3cfg")
        save = ["sh", "-c", f"{etcdctl} --endpoints=https://{addr}:2379 --cacert=/etc/etcd/pki/ca.crt "
                "--cert=/etc/etcd/pki/client.crt --key=/etc/etcd/pki/client.key snapshot save /root/base.db "
                f">/dev/null && s3cmd -c /root/.s3cfg put /root/base.db s3://etcd-backups/by-hand/{app}-$(date +%s%N).db"]
        action, action_rss, base = [], [], []
        for _ in range(2):
            h("exec", "--unit", unit, "--", "rm -rf /root/snaps /root/base.db; sync")
            t = time.perf_counter()
            out = json.loads(h("run", "--format", "json", unit, "snapshot", "target=/root/snaps", "upload=true"))
            action.append(time.perf_counter() - t)
            assert out[unit]["status"] == "completed", out
            ran = [m for m in RAN.finditer(h("debug-log")) if m.group(1) == unit.replace("/", "-")]
            action_rss.append(float(ran[-1].group(3)))
            h("exec", "--unit", unit, "--", "sync")
            b = json.loads(inside(unit, ONE.format(argv=json.dumps(save))))
            base.append(b["s"])
            print(f"    {name}: action {action[-1]:.2f} s ({action_rss[-1]:.1f} MiB), by hand {base[-1]:.2f} s", flush=True)
        row(f"snapshot upload=true (write, upload, read back, record), {name}", min(action), "s",
            "etcdctl snapshot save + s3cmd put", min(base), "<= 1x")
        rss[name] = max(action_rss)
        h("remove-application", app)
    (small, a), (large, b) = rss.items()
    row(f"snapshot upload=true peak RSS, {large}", b, "MB", small, a, "flat (~1x), < 64 MB")
