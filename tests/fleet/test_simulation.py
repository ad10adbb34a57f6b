"""Flower's simulation engine end to end on a tiny BERT: the apps, the strategy and the faults."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from flwr.clientapp import ClientApp

from rgft_edge.fleet import simulate
from rgft_edge.fleet import apps

ROOT = Path(__file__).resolve().parents[2]


def check_rgft_uploads(res: dict, budget: float) -> None:
    """Every accepted reply carried a strict subset of the components, within the byte budget."""
    trainable = res["trainable_bytes"]
    for e in res["history"][1:]:
        for c in e["clients"]:
            assert set(c["components"]) < set(res["components"])
            assert c["uplink_bytes"] <= budget * trainable + 4096  # arrays + key names
            assert c["metrics"]["steps"] == 3 and c["energy_source"].startswith(("estimated:", "measured:"))
        assert e["downlink_bytes"] >= e["asked"] * trainable


ROUND_TIMEOUT_S, STRAGGLE_S = 20, 24  # the deadline leaves room for the first model load
faulty_app = ClientApp()


@faulty_app.train()
def _faulty(msg, context):
    part = int(context.node_config["partition-id"])
    rnd = int(msg.content.config_records["config"]["server-round"])
    if part == 1:
        raise RuntimeError("device dropped mid-round")
    if part == 2 and rnd == 1:
        time.sleep(STRAGGLE_S)  # past the round deadline: left out of round 1
    reply = apps.train(msg, context)
    if part == 3:  # a reply naming a component the model does not have
        reply.content.config_records["upload"]["components"] = ["layer.99.ffn"]
    return reply


def test_faults_then_a_server_kill_and_resume(tiny_fleet, tmp_path):
    """One fleet through every client fault, killed after round 1 and resumed: a dropped client and
    a reply naming an unknown component are refused with their reasons, a straggler past the
    deadline is left out of round 1, the other replies are averaged; the resumed server continues
    after the last completed round with nothing repeated or lost."""
    out = tmp_path / "fleet"
    cfg = tiny_fleet.replace(method="rgft", out=str(out), rounds=3, round_timeout_s=ROUND_TIMEOUT_S)
    script = ("import sys, json; from rgft_edge.fleet import FleetConfig, simulate; "
              "from tests.fleet.test_simulation import faulty_app; "
              "simulate(FleetConfig.from_run_config(json.loads(sys.argv[1])), client_app=faulty_app)")
    proc = subprocess.Popen([sys.executable, "-c", script, json.dumps(cfg.to_run_config())], cwd=ROOT,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out / "fleet_state.json"
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not (state.is_file() and json.loads(state.read_text())["round"] >= 1):
            assert proc.poll() is None, "the fleet run ended before its first round"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the server and its Ray workers, mid-run
        proc.wait()
    at_kill = json.loads(state.read_text())
    assert 1 <= at_kill["round"] < 3
    r1 = at_kill["history"][1]
    assert r1["accepted"] == 1 and r1["no_reply"] == 1, r1  # only partition 0; the straggler missed the deadline
    reasons = " | ".join(r["reason"] for r in r1["refused"])
    assert "dropped mid-round" in reasons and "unknown component" in reasons

    res = simulate(cfg.replace(resume=True), client_app=faulty_app)
    assert [e["round"] for e in res["history"]] == [0, 1, 2, 3]  # nothing repeated, nothing lost
    assert res["history"][:at_kill["round"] + 1] == at_kill["history"]
    for e in res["history"][2:]:  # partitions 1 and 3 refused; 0 and 2 accepted (or late, on a loaded host)
        assert len(e["refused"]) == 2 and e["accepted"] >= 1 and e["accepted"] + e["no_reply"] == 2, e
    assert all(np.isfinite(e["accuracy"]) for e in res["history"])
    check_rgft_uploads(res, cfg.upload_budget)
    from safetensors.numpy import load_file

    saved = load_file(str(out / "global.safetensors"))
    assert {k.split("|")[0] for k in saved} == set(res["components"])  # the whole global state, per component
    assert all(np.isfinite(v).all() for v in saved.values())


def test_fedavg_clients_train_and_upload_every_component(tiny_fleet):
    from rgft_edge.error_map import ErrorMap
    from rgft_edge.fleet.client import fleet_model, train_round

    cfg = tiny_fleet.replace(method="fedavg-full")
    fm = fleet_model(cfg)
    start = fm.read()
    res = train_round(fm, cfg, 0, start, ErrorMap(len(fm.table)), server_round=1)
    assert res.components == list(range(len(fm.table))) and set(res.values) == set(fm.slots)
    assert res.metrics["probe-steps"] == 0 and res.metrics["steps"] == cfg.local_steps
    assert any(not np.array_equal(res.values[k], start[k]) for k in start)


def test_resume_refuses_other_settings_and_a_missing_checkpoint(tiny_fleet, tmp_path):
    from rgft_edge.errors import UserError
    from rgft_edge.fleet.server import load_checkpoint, save_checkpoint

    keys = {"a|w": np.zeros(3, np.float32)}
    save_checkpoint(tmp_path, tiny_fleet, 1, keys, [{"round": 0}])
    assert load_checkpoint(tmp_path, tiny_fleet.replace(rounds=9), keys)[0] == 1
    with pytest.raises(UserError, match="other settings: method"):
        load_checkpoint(tmp_path, tiny_fleet.replace(method="fedavg-lora"), keys)
    with pytest.raises(UserError, match="do not match"):
        load_checkpoint(tmp_path, tiny_fleet, {"b|w": np.zeros(3, np.float32)})
    with pytest.raises(UserError, match="no fleet checkpoint"):
        load_checkpoint(tmp_path / "nowhere", tiny_fleet, keys)
    (tmp_path / "global.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(UserError, match="unreadable"):
        load_checkpoint(tmp_path, tiny_fleet, keys)
