#!/usr/bin/env python3
"""The agent side of cos_agent, with cosl and a real Prometheus on the principal's machine."""
import json
import pathlib
import subprocess
import urllib.request

import cosl
import ops
import yaml

PROM = pathlib.Path("/var/cache/etcd-charm-test/prometheus")
STATE = pathlib.Path("/var/lib/cos-probe")
SERVICE = "cos-probe-prometheus"


class CosProbe(ops.CharmBase):
    def __init__(self, framework):
        super().__init__(framework)
        rel = self.on["cos-agent"]
        for e in (rel.relation_joined, rel.relation_changed, self.on.update_status):
            framework.observe(e, self._configure)
        framework.observe(rel.relation_broken, self._stop)

    def _principal(self):
        rel = self.model.get_relation("cos-agent")
        if rel is None:
            return None, None
        units = [u for u in rel.units if u.app is not self.app]
        return rel, (units[0] if units else None)

    def _configure(self, _):
        rel, principal = self._principal()
        if principal is None:
            self.unit.status = ops.WaitingStatus("no principal")
            return
        raw = rel.data[principal].get("config")
        if not raw:
            self.unit.status = ops.WaitingStatus("no config from the principal yet")
            return
        cfg = json.loads(raw)
        STATE.mkdir(parents=True, exist_ok=True)
        topology = cosl.JujuTopology(
            model=self.model.name,
            model_uuid=self.model.uuid,
            application=principal.app.name,
            unit=principal.name,
            charm_name="etcd",
        )
        labels = topology.label_matcher_dict
        labels["juju_unit"] = principal.name
        dashboards = [json.loads(cosl.LZMABase64.decompress(d)) for d in cfg["dashboards"]]
        rules = STATE / "rules.yaml"
        rules.write_text(yaml.safe_dump(cfg["metrics_alert_rules"]))
        jobs = []
        for job in cfg["metrics_scrape_jobs"]:
            job = dict(job, scrape_interval="5s")
            job["static_configs"] = [
                dict(sc, labels={**sc.get("labels", {}), **labels}) for sc in job["static_configs"]
            ]
            jobs.append(job)
        prom = {
            "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
            "rule_files": [str(rules)],
            "scrape_configs": jobs,
        }
        conf = STATE / "prometheus.yml"
        changed = not conf.exists() or conf.read_text() != yaml.safe_dump(prom)
        conf.write_text(yaml.safe_dump(prom))
        check = subprocess.run(
            [str(PROM / "promtool"), "check", "rules", str(rules)], capture_output=True, text=True
        )
        report = {
            "jobs": [j["job_name"] for j in jobs],
            "targets": [t for j in jobs for sc in j["static_configs"] for t in sc["targets"]],
            "rule_groups": len(cfg["metrics_alert_rules"].get("groups", [])),
            "dashboards": [d.get("title") for d in dashboards],
            "log_slots": cfg.get("log_slots"),
            "promtool_rules": check.returncode,
            "promtool_output": check.stdout + check.stderr,
        }
        (STATE / "report.json").write_text(json.dumps(report))
        self._run_prometheus(conf, changed)
        self.unit.status = ops.ActiveStatus(
            f"scraping {len(jobs)} jobs, {report['rule_groups']} rule groups, "
            f"{len(dashboards)} dashboards, promtool {'ok' if check.returncode == 0 else 'FAILED'}"
        )

    def _run_prometheus(self, conf, changed):
        unit = pathlib.Path(f"/etc/systemd/system/{SERVICE}.service")
        body = (
            "[Unit]\nDescription=Prometheus of the cos-probe\n\n[Service]\n"
            f"ExecStart={PROM / 'prometheus'} --config.file={conf} "
            f"--storage.tsdb.path={STATE / 'data'} --web.listen-address=127.0.0.1:9090 "
            "--web.enable-lifecycle\nRestart=on-failure\n"
        )
        if not unit.exists() or unit.read_text() != body:
            unit.write_text(body)
            subprocess.run(["systemctl", "daemon-reload"], check=True)
            subprocess.run(["systemctl", "restart", SERVICE], check=True)
        elif changed:
            try:
                urllib.request.urlopen(
                    urllib.request.Request("http://127.0.0.1:9090/-/reload", method="POST"), timeout=5
                )
            except OSError:
                subprocess.run(["systemctl", "restart", SERVICE], check=True)
        else:
            subprocess.run(["systemctl", "start", SERVICE], check=True)

    def _stop(self, _):
        subprocess.run(["systemctl", "stop", SERVICE])
        self.unit.status = ops.WaitingStatus("not related")


if __name__ == "__main__":
    ops.main(CosProbe)
