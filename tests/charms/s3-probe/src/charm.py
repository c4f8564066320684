#!/usr/bin/env python3
"""Plays s3-integrator over a real S3 server: SeaweedFS's `weed mini` on this unit's machine.

The relation data follows charm-relation-interfaces' s3 spec (v0: keys in the application
databag; v1: keys in a Juju secret named by `secret-extra`, the requirer's `requested-secrets`
read). The charm library of the interface (charms.data_platform_libs.v0.s3) is not published
on PyPI, so the fields are written here from the spec, with ops.
"""
import base64
import json
import pathlib
import socket
import subprocess
import time

import ops

WEED = "/var/cache/etcd-charm-test/weed/weed"
STATE = pathlib.Path("/var/lib/s3-probe")
UNIT = "s3-probe-weed"
HTTP, HTTPS = 8333, 8334


class S3Probe(ops.CharmBase):
    def __init__(self, framework):
        super().__init__(framework)
        framework.observe(self.on.install, self._serve)
        framework.observe(self.on.config_changed, self._serve)
        framework.observe(self.on.start, self._serve)
        rel = self.on["s3-credentials"]
        framework.observe(rel.relation_joined, self._share)
        framework.observe(rel.relation_changed, self._share)

    def _address(self):
        binding = self.model.get_binding("s3-credentials")
        return str(binding.network.ingress_address)

    def _serve(self, event):
        STATE.mkdir(parents=True, exist_ok=True)
        addr = self._address()
        cfg = self.config
        identities = {
            "identities": [
                {
                    "name": "etcd",
                    "credentials": [{"accessKey": cfg["access-key"], "secretKey": cfg["secret-key"]}],
                    "actions": ["Read", "List", "Tagging", "Write"],
                }
            ]
        }
        conf = STATE / "s3.json"
        conf.write_text(json.dumps(identities))
        conf.chmod(0o600)
        args = [
            WEED, "mini", f"-dir={STATE / 'data'}", f"-ip={addr}", f"-ip.bind={addr}",
            "-master.telemetry=false", f"-bucket={cfg['bucket']}", f"-s3.config={conf}",
        ]
        if cfg["tls"]:
            self._make_tls(addr)
            args += [f"-s3.cert.file={STATE / 'server.pem'}", f"-s3.key.file={STATE / 'server.key'}",
                     f"-s3.port.https={HTTPS}"]
        (STATE / "data").mkdir(exist_ok=True)
        unit = (
            "[Unit]\nDescription=S3 server of the s3-probe test charm\n\n"
            f"[Service]\nExecStart={' '.join(args)}\nRestart=on-failure\n"
        )
        path = pathlib.Path(f"/etc/systemd/system/{UNIT}.service")
        changed = not path.exists() or path.read_text() != unit
        path.write_text(unit)
        subprocess.run(["systemctl", "daemon-reload"], check=True)
        subprocess.run(["systemctl", "restart" if changed else "start", UNIT], check=True)
        self.unit.open_port("tcp", HTTP)
        self.unit.open_port("tcp", HTTPS)
        self._wait_listening(addr, HTTP)
        self.unit.status = ops.ActiveStatus(f"serving S3 at {self._endpoint(addr)}")
        for rel in self.model.relations["s3-credentials"]:
            self._share_on(rel)

    def _make_tls(self, addr):
        if (STATE / "server.pem").exists():
            return
        run = lambda *a: subprocess.run(a, check=True, capture_output=True, cwd=STATE)  # noqa: E731
        run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "30", "-subj", "/CN=s3-probe CA")
        run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={addr}")
        (STATE / "ext.cnf").write_text(f"subjectAltName=IP:{addr}\n")
        run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "30", "-extfile", "ext.cnf")

    def _wait_listening(self, addr, port):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection((addr, port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"weed does not listen on {addr}:{port}")

    def _endpoint(self, addr):
        return f"https://{addr}:{HTTPS}" if self.config["tls"] else f"http://{addr}:{HTTP}"

    def _share(self, event):
        self._share_on(event.relation)

    def _share_on(self, rel):
        if not self.unit.is_leader():
            return
        cfg = self.config
        addr = self._address()
        data = {
            "bucket": cfg["shared-bucket"] or cfg["bucket"],
            "endpoint": self._endpoint(addr),
            "region": "us-east-1",
            "path": cfg["path"],
            "s3-uri-style": "path",
        }
        keys = {"access-key": cfg["access-key"], "secret-key": cfg["shared-secret-key"] or cfg["secret-key"]}
        if cfg["protocol"] == "v1":
            label = f"s3-credentials-{rel.id}"
            try:
                secret = self.model.get_secret(label=label)
                secret.set_content(keys)
            except ops.SecretNotFoundError:
                secret = self.app.add_secret(keys, label=label)
            secret.grant(rel)
            data["secret-extra"] = secret.id
            data["lib-version"] = "1.0"
            for k in ("access-key", "secret-key"):
                rel.data[self.app].pop(k, None)
        else:
            data.update(keys)
        if cfg["tls"]:
            ca = (STATE / "ca.pem").read_text()
            # the spec's form: a list of base64-encoded certificates
            data["tls-ca-chain"] = json.dumps([base64.b64encode(ca.encode()).decode()])
        rel.data[self.app].update(data)


if __name__ == "__main__":
    ops.main(S3Probe)
