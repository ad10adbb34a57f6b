"""A real deployment: SuperLink and SuperNodes as separate processes on localhost, `flwr run`."""

import json
import time

from rgft_edge.fleet.deploy import LocalFleet, write_app


def test_superlink_and_supernodes_complete_the_rounds_through_a_killed_and_restarted_device(tiny_fleet, tmp_path):
    cfg = tiny_fleet.replace(method="rgft", clients=2, min_clients=2, rounds=3, round_timeout_s=20,
                             out=str(tmp_path / "server"))
    state = tmp_path / "server" / "fleet_state.json"
    with LocalFleet(tmp_path / "work", nodes=2) as fleet:
        run_id = fleet.submit(cfg)
        deadline = time.time() + 240
        while not (state.is_file() and json.loads(state.read_text())["round"] >= 1):
            assert time.time() < deadline, "round 1 never completed"
            assert fleet.status(run_id)["status"] != "finished:failed"
            time.sleep(0.2)
        fleet.kill_node(1)   # a device loses power while round 2 is under way...
        fleet.start_node(1)  # ...and comes back with its state directory
        st = fleet.wait(run_id, 300)
    assert st["status"] == "finished:completed", st
    hist = json.loads((tmp_path / "server" / "results.json").read_text())["history"]
    assert [h["round"] for h in hist] == [0, 1, 2, 3]
    assert hist[1]["accepted"] == 2 and not hist[1]["refused"]
    assert sum(h["no_reply"] for h in hist[2:]) >= 1  # the killed device's round timed out, the run went on
    # the restarted device answered round 3 with the error map it had saved before the kill
    assert hist[3]["accepted"] == 2
    assert all(c["metrics"]["map-known"] > 0 for c in hist[3]["clients"])
    assert (tmp_path / "work" / "nodes" / "node1" / "error_map.safetensors").is_file()


def test_the_written_app_declares_every_setting_for_flwr_run(tiny_fleet, tmp_path):
    import tomllib

    d = write_app(tmp_path / "app", tiny_fleet)
    py = tomllib.loads((d / "pyproject.toml").read_text())
    assert py["tool"]["flwr"]["app"]["components"] == {"serverapp": "rgft_fleet_app:server_app",
                                                       "clientapp": "rgft_fleet_app:client_app"}
    assert py["tool"]["flwr"]["app"]["config"] == tiny_fleet.to_run_config()
    assert "server_app = _apps.server_app" in (d / "rgft_fleet_app.py").read_text()
