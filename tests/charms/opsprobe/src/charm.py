#!/usr/bin/env python3
"""A minimal ops charm: install, config-changed, peer and db relations, and an action."""
import pathlib

import ops

STATE = pathlib.Path("/var/lib/opsprobe")


class OpsProbe(ops.CharmBase):
    def __init__(self, framework):
        super().__init__(framework)
        framework.observe(self.on.install, self._on_install)
        framework.observe(self.on.config_changed, self._on_config_changed)
        framework.observe(self.on["peers"].relation_changed, self._on_peer_changed)
        framework.observe(self.on["db"].relation_changed, self._on_db_changed)
        framework.observe(self.on.echo_action, self._on_echo)

    def _on_install(self, event):
        STATE.mkdir(parents=True, exist_ok=True)
        (STATE / "installed").write_text("yes")
        self.unit.status = ops.MaintenanceStatus("installed by ops")

    def _on_config_changed(self, event):
        greeting = self.config["greeting"]
        self.unit.status = ops.ActiveStatus(f"greeting={greeting}")
        if self.unit.is_leader():
            self.app.status = ops.ActiveStatus("ops leader says " + greeting)
        rel = self.model.get_relation("peers")
        if rel is not None:
            rel.data[self.unit]["greeting"] = greeting

    def _on_peer_changed(self, event):
        if event.unit is None:
            return
        said = event.relation.data[event.unit].get("greeting", "")
        (STATE / f"peer-{event.unit.name.replace('/', '-')}").write_text(said)

    def _on_db_changed(self, event):
        if event.unit is None:
            return
        data = event.relation.data[event.unit]
        (STATE / "db-remote").write_text(f"{event.app.name} {data.get('ingress-address', '')}")

    def _on_echo(self, event):
        event.log("echoing")
        text = event.params["text"]
        if text == "fail":
            event.fail("asked to fail")
            return
        event.set_results({"echo": text, "unit": self.unit.name})


if __name__ == "__main__":
    ops.main(OpsProbe)
