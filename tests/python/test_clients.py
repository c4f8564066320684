"""Real Python clients against the local controller: jubilant drives it through
Juju(cli_binary=...), and a charm written with ops runs its handlers under it."""
import json
import os
import pathlib
import re
import time

import jubilant
import pytest

BIN = os.environ["HARNESS_BIN"]
ROOT = pathlib.Path(os.environ["REPO_ROOT"])


@pytest.fixture(scope="module")
def juju():
    j = jubilant.Juju(cli_binary=BIN, wait_timeout=120)
    j.add_model("py")
    j.model_config({"update-status-hook-interval": "1h"})
    yield j
    j.destroy_model("py", destroy_storage=True, force=True)


def test_deploy_wait_status_run_config_integrate_remove(juju):
    juju.deploy(str(ROOT / "tests/charms/probe"), "probe", num_units=2)
    juju.deploy(str(ROOT / "tests/charms/opsprobe"), "opsprobe", num_units=2)
    status = juju.wait(jubilant.all_active)
    assert status.apps["probe"].units["probe/0"].workload_status.message == "started"
    assert status.apps["opsprobe"].app_status.message == "ops leader says hello"
    assert {u.workload_status.message for u in status.apps["opsprobe"].units.values()} == {"greeting=hello"}

    # jubilant parses `version --format json --all` as Juju's <version>-<os>-<arch>.
    assert juju.version().major == 3

    # run() without wait= is Juju's 60 s default; TaskError comes from the task's status.
    task = juju.run("probe/0", "echo", {"text": "from jubilant", "times": 2})
    assert task.status == "completed" and task.success
    assert task.results["result"] == {"text": "from jubilant", "times": "2"}
    with pytest.raises(jubilant.TaskError) as err:
        juju.run("probe/0", "fail")
    assert err.value.task.message == "it broke"

    juju.config("opsprobe", {"greeting": "bonjour"})
    juju.wait(lambda s: all(u.workload_status.message == "greeting=bonjour" for u in s.apps["opsprobe"].units.values()))
    assert juju.config("opsprobe")["greeting"] == "bonjour"

    # ops: the peer relation carried the new greeting to the other unit
    def peer_saw_bonjour(_):
        out = juju.exec("cat /var/lib/opsprobe/peer-opsprobe-0 2>/dev/null || true", unit="opsprobe/1").stdout
        return out == "bonjour"
    juju.wait(peer_saw_bonjour)

    # ops action handler: results, logs and failure
    task = juju.run("opsprobe/0", "echo", {"text": "ops"})
    assert task.results == {"echo": "ops", "unit": "opsprobe/0"}
    assert any("echoing" in line for line in task.log)
    with pytest.raises(jubilant.TaskError):
        juju.run("opsprobe/0", "echo", {"text": "fail"})

    juju.integrate("opsprobe:db", "probe:db")
    def related(_):
        out = juju.exec("cat /var/lib/opsprobe/db-remote 2>/dev/null || true", unit="opsprobe/0").stdout
        return out.startswith("probe ")
    juju.wait(related)
    assert juju.status().apps["probe"].relations["db"][0].related_app == "opsprobe"

    # refresh(channel=...) as jubilant passes it: a store charm moves to the channel (and a
    # new revision); a local charm has no channel to move to.
    juju.deploy("probe", "sprobe")
    juju.wait(lambda s: "sprobe" in s.apps and jubilant.all_active(s))
    assert juju.status().apps["sprobe"].charm_channel == "stable"
    juju.refresh("sprobe", channel="latest/edge", config={"greeting": "refreshed"})
    juju.wait(lambda s: s.apps["sprobe"].charm_channel == "latest/edge" and s.apps["sprobe"].charm_rev == 2)
    assert juju.config("sprobe")["greeting"] == "refreshed"
    with pytest.raises(jubilant.CLIError, match="local charm"):
        juju.refresh("probe", channel="latest/edge", path=str(ROOT / "tests/charms/probe"))
    juju.remove_application("sprobe")

    juju.remove_unit("probe/1")
    juju.wait(lambda s: list(s.apps["probe"].units) == ["probe/0"] and jubilant.all_active(s))

    # run() without wait= on an action longer than Juju's 60 s default: TimeoutError once the
    # 60 s are up (the fidelity notes, from jubilant's run() and Juju's runCommandBase),
    # while the task runs on and completes.
    started = time.monotonic()
    with pytest.raises(TimeoutError) as timeout:
        juju.run("probe/0", "sleep", {"seconds": 64})
    waited = time.monotonic() - started
    assert 59 <= waited < 64, waited
    task_id = re.search(r"task (\d+) on unit-probe-0", str(timeout.value)).group(1)
    def task_completed(_):
        task = json.loads(juju.cli("show-task", task_id, "--format", "json"))
        return task.get("status") == "completed" and task.get("results", {}).get("slept") == "yes"
    juju.wait(task_completed, timeout=30)


def test_new_commands_output_parses_where_jubilant_reads_it(juju):
    import json
    # status: `exposed` and the application's `base` as jubilant's dataclasses read them
    juju.cli("expose", "probe")
    app = juju.status().apps["probe"]
    assert app.exposed is True
    assert app.base is not None and app.base.name == "ubuntu" and app.base.channel
    juju.cli("unexpose", "probe")
    assert juju.status().apps["probe"].exposed is False
    # storage and pools through jubilant's cli(), as JSON
    pools = json.loads(juju.cli("storage-pools", "--format", "json"))
    assert pools["loop"]["provider"] == "loop" and pools["rootfs"]["provider"] == "rootfs"
    storage = json.loads(juju.cli("storage", "--format", "json"))
    units = [a["units"] for s in storage["storage"].values() for a in [s["attachments"]]]
    assert any("probe/0" in u for u in units), storage
