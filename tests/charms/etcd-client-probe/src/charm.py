#!/usr/bin/env python3
"""An etcd_client/v0 requirer: its certificate from a v4 provider, its answer kept on disk."""
import json
import pathlib

import ops
from charmlibs.interfaces import tls_certificates as tls

STATE = pathlib.Path("/var/lib/etcd-client-probe")
LABEL = "etcd-client-probe-mtls"


class EtcdClientProbe(ops.CharmBase):
    def __init__(self, framework):
        super().__init__(framework)
        cn = self.config.get("common-name") or self.app.name
        self.request = tls.CertificateRequestAttributes(
            common_name=cn, add_unique_id_to_subject_name=False
        )
        self.tls = tls.TLSCertificatesRequiresV4(
            self, "certificates", certificate_requests=[self.request], mode=tls.Mode.APP
        )
        for e in (
            self.on.config_changed,
            self.on.update_status,
            self.on.certificates_relation_changed,
            self.tls.on.certificate_available,
            self.on.etcd_client_relation_joined,
            self.on.etcd_client_relation_changed,
            self.on.secret_changed,
        ):
            framework.observe(e, self._configure)
        framework.observe(self.on.etcd_client_relation_broken, self._broken)

    def _configure(self, _):
        STATE.mkdir(parents=True, exist_ok=True)
        cert, key = self.tls.get_assigned_certificate(certificate_request=self.request)
        if not cert or not key:
            self.unit.status = ops.WaitingStatus("waiting for a certificate")
            return
        keyfile = STATE / "client.key"
        keyfile.touch(mode=0o600)
        keyfile.write_text(str(key) + "\n")
        (STATE / "client.crt").write_text(str(cert.certificate) + "\n")
        rel = self.model.get_relation("etcd-client")
        if rel is None:
            self.unit.status = ops.ActiveStatus("certificate, no etcd")
            return
        if self.unit.is_leader():
            content = {"mtls-cert": str(cert.certificate)}
            try:
                secret = self.model.get_secret(label=LABEL)
                if secret.get_content(refresh=True) != content:
                    secret.set_content(content)
            except ops.SecretNotFoundError:
                secret = self.app.add_secret(content, label=LABEL)
            secret.grant(rel)
            rel.data[self.app].update(
                {
                    "prefix": self.config["prefix"],
                    "secret-mtls": secret.id or secret.get_info().id,
                    "requested-secrets": json.dumps(["username", "tls-ca"]),
                    "provided-secrets": json.dumps(["mtls-cert"]),
                }
            )
        theirs = rel.data[rel.app] if rel.app else {}
        answer = {"endpoints": theirs.get("endpoints", ""), "version": theirs.get("version", "")}
        for field, key_name in (("secret-user", "username"), ("secret-tls", "tls-ca")):
            uri = theirs.get(field)
            if uri:
                answer[key_name] = self.model.get_secret(id=uri).get_content(refresh=True)[key_name]
        (STATE / "answer.json").write_text(json.dumps(answer))
        if "tls-ca" in answer:
            (STATE / "ca.crt").write_text(answer["tls-ca"])
        if answer.get("username") and answer.get("endpoints"):
            self.unit.status = ops.ActiveStatus(f"served as {answer['username']}")
        else:
            self.unit.status = ops.WaitingStatus("waiting for etcd")

    def _broken(self, _):
        (STATE / "answer.json").unlink(missing_ok=True)
        self.unit.status = ops.ActiveStatus("no etcd")


if __name__ == "__main__":
    ops.main(EtcdClientProbe)
