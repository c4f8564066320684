#!/usr/bin/env python3
"""A tls-certificates v4 provider on the published library, as self-signed-certificates is."""
import datetime
import pathlib

import ops
from charmlibs.interfaces import tls_certificates as tls

STATE = pathlib.Path("/var/lib/tls-v4-probe")
HOLD = STATE / "hold"


class TlsV4Probe(ops.CharmBase):
    def __init__(self, framework):
        super().__init__(framework)
        self.tls = tls.TLSCertificatesProvidesV4(self, "certificates")
        for e in (
            self.on.install,
            self.on.config_changed,
            self.on.update_status,
            self.on.certificates_relation_joined,
            self.on.certificates_relation_changed,
        ):
            framework.observe(e, self._configure)
        framework.observe(self.on.rotate_ca_action, self._rotate)
        framework.observe(self.on.issue_action, self._issue_action)
        framework.observe(self.on.forget_action, self._forget)

    def _generation(self):
        p = STATE / "generation"
        return int(p.read_text()) if p.exists() else 0

    def _new_ca(self):
        STATE.mkdir(parents=True, exist_ok=True)
        gen = self._generation() + 1
        key = tls.generate_private_key()
        ca = tls.generate_ca(
            private_key=key,
            validity=datetime.timedelta(days=365),
            common_name=f"tls-v4-probe CA {gen}",
        )
        keyfile = STATE / "ca.key"
        keyfile.touch(mode=0o600)
        keyfile.write_text(str(key))
        (STATE / "ca.crt").write_text(str(ca) + "\n")
        (STATE / "generation").write_text(str(gen))

    def _ca(self):
        if not (STATE / "ca.crt").exists():
            self._new_ca()
        return (
            tls.PrivateKey.from_string((STATE / "ca.key").read_text()),
            tls.Certificate.from_string((STATE / "ca.crt").read_text()),
        )

    def _issue(self):
        key, ca = self._ca()
        issued = refused = 0
        validity = datetime.timedelta(minutes=self.config["validity-minutes"])
        for req in self.tls.get_outstanding_certificate_requests():
            csr = req.certificate_signing_request
            if self.config["refuse-ip-sans"] and csr.sans_ip:
                self.tls.set_relation_error(
                    tls.ProviderCertificateError(
                        relation_id=req.relation_id,
                        certificate_signing_request=csr,
                        error=tls.CertificateError(
                            code=tls.CertificateRequestErrorCode.IP_NOT_ALLOWED,
                            name="IP_NOT_ALLOWED",
                            message="IP SANs are not allowed by this provider",
                        ),
                    )
                )
                refused += 1
                continue
            cert = tls.generate_certificate(
                csr=csr, ca=ca, ca_private_key=key, validity=validity, is_ca=req.is_ca
            )
            self.tls.set_relation_certificate(
                tls.ProviderCertificate(
                    relation_id=req.relation_id,
                    certificate=cert,
                    certificate_signing_request=csr,
                    ca=ca,
                    chain=[cert, ca],
                )
            )
            issued += 1
        return issued, refused

    def _configure(self, _):
        if not self.unit.is_leader():
            return
        self._ca()
        if HOLD.exists():
            self.unit.status = ops.MaintenanceStatus(f"CA {self._generation()}: holding")
            return
        issued, refused = self._issue()
        self.unit.status = ops.ActiveStatus(
            f"CA {self._generation()}: issued {issued}, refused {refused} in this hook"
        )

    def _rotate(self, event):
        self.tls.revoke_all_certificates()
        self._new_ca()
        HOLD.touch()
        event.set_results({"generation": self._generation()})

    def _forget(self, event):
        HOLD.touch()
        for rel in self.model.relations["certificates"]:
            rel.data[self.app].pop("certificates", None)
        event.set_results({"forgotten": True})

    def _issue_action(self, event):
        HOLD.unlink(missing_ok=True)
        issued, refused = self._issue()
        event.set_results({"issued": issued, "refused": refused})


if __name__ == "__main__":
    ops.main(TlsV4Probe)
