"""A real Flower deployment on this machine: one SuperLink and N SuperNodes as separate processes
on localhost (insecure, free ports), the fleet app submitted with `flwr run`, the run followed to
its end, every process stopped.

This is what a fleet looks like in the field minus TLS and the network: each SuperNode is one
device (its own `partition-id`, `profile` and `state-dir`), the SuperLink the coordinator. Flower
1.41 facts this relies on (found by running it): the SuperLink serves every API on one HTTP port;
`flwr` finds it through `$FLWR_HOME/config.toml`; the SuperLink would `uv sync` the app's
dependencies from PyPI unless told not to; `flwr run` exits 0 even when the run fails, so the run's
status is read back; the apps run as subprocesses that inherit this environment (the installed
rgft_edge is importable there).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ..errors import UserError
from .config import FleetConfig

CONNECTION = "rgft-local"
SHIM = '''"""Entry points of the rgft-edge fleet app (written by `rgft-edge fleet app`)."""
import rgft_edge.fleet.apps as _apps

server_app = _apps.server_app
client_app = _apps.client_app
'''


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string


def write_app(directory: str | Path, cfg: FleetConfig) -> Path:
    """A Flower app directory for `flwr run`: pyproject.toml (components, the run config with this
    cfg's values as defaults) and a two-line shim importing the installed apps."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    config = "\n".join(f"{k} = {_toml(v)}" for k, v in cfg.to_run_config().items())
    (d / "pyproject.toml").write_text(f'''[project]
name = "rgft-fleet"
version = "1.0.0"
description = "Federated RGFT: each device uploads only the components it trained"
license = "Apache-2.0"
dependencies = ["rgft-edge"]

[tool.flwr.app]
publisher = "rgft-edge"

[tool.flwr.app.components]
serverapp = "rgft_fleet_app:server_app"
clientapp = "rgft_fleet_app:client_app"

[tool.flwr.app.config]
{config}
''')
    (d / "rgft_fleet_app.py").write_text(SHIM)
    return d


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalFleet:
    """SuperLink + SuperNodes on localhost; `with LocalFleet(...) as fleet: fleet.run(cfg)`."""

    def __init__(self, workdir: str | Path, nodes: int, profiles: list[str] | None = None):
        self.dir = Path(workdir).resolve()
        self.nodes = nodes
        self.profiles = profiles or []
        self.procs: dict[str, subprocess.Popen] = {}
        bindir = str(Path(sys.executable).parent)
        self.home = self.dir / "flwr_home"
        self.env = {**os.environ, "FLWR_HOME": str(self.home), "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
                    "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1", "HF_HUB_OFFLINE": "1"}
        self.bin = Path(bindir)

    # -- processes -----------------------------------------------------------------------------
    def _start(self, name: str, argv: list[str]) -> None:
        log = open(self.dir / "logs" / f"{name}.log", "w")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            start_new_session=True, cwd=self.dir)
        log.close()

    def start_node(self, i: int) -> None:
        state = self.dir / "nodes" / f"node{i}"
        cfg = f"partition-id={i} num-partitions={self.nodes} state-dir={json.dumps(str(state))}"
        if i < len(self.profiles):
            cfg += f" profile={json.dumps(self.profiles[i])}"
        self._start(f"supernode{i}", [str(self.bin / "flower-supernode"), "--insecure", "--superlink",
                                      f"127.0.0.1:{self.port}", "--host", "127.0.0.1", "--port",
                                      str(_free_port()), "--node-config", cfg])

    def kill_node(self, i: int) -> None:
        """SIGKILL a SuperNode's whole process group (a device losing power)."""
        p = self.procs.pop(f"supernode{i}")
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()

    def __enter__(self) -> "LocalFleet":
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "127.0.0.1:{self.port}"\ninsecure = true\n')
        self._start("superlink", [str(self.bin / "flower-superlink"), "--insecure", "--host", "127.0.0.1",
                                  "--port", str(self.port), "--disable-runtime-dependency-installation"])
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2).read()
                break
            except OSError:
                if time.time() > deadline or self.procs["superlink"].poll() is not None:
                    self.__exit__(None, None, None)
                    raise RuntimeError(f"the SuperLink did not start; see {self.dir / 'logs' / 'superlink.log'}")
                time.sleep(0.2)
        for i in range(self.nodes):
            self.start_node(i)
        self.wait_nodes(self.nodes)
        return self

    def wait_nodes(self, n: int, timeout_s: float = 120) -> None:
        """Until n SuperNodes are online (a round would otherwise start with the first min_clients)."""
        deadline = time.time() + timeout_s
        while True:
            try:
                nodes = self._flwr("supernode", "ls", CONNECTION).get("nodes", [])
            except RuntimeError:
                nodes = []
            if sum(1 for x in nodes if x.get("status") == "online") >= n:
                return
            if time.time() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"only {len(nodes)} of {n} SuperNodes came online; see {self.dir / 'logs'}")
            time.sleep(0.5)

    def __exit__(self, *exc) -> None:
        for name in sorted(self.procs, key=lambda n: n == "superlink"):  # nodes first, then the link
            p = self.procs[name]
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.time() + 15
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
        for p in self.procs.values():  # whatever is left in their groups (superexec, app processes)
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        self.procs.clear()

    # -- the run ---------------------------------------------------------------------------------
    def _flwr(self, *args: str, cwd: Path | None = None) -> dict:
        out = subprocess.run([str(self.bin / "flwr"), *args, "--format", "json"], capture_output=True, text=True,
                             env=self.env, cwd=cwd or self.dir, timeout=120)
        try:
            return json.loads(out.stdout)
        except json.JSONDecodeError as e:
            raise RuntimeError(f"flwr {args[0]}: unreadable answer: {(out.stdout + out.stderr)[-400:]}") from e

    def submit(self, cfg: FleetConfig) -> int:
        app = write_app(self.dir / "app", cfg)
        ans = self._flwr("run", ".", CONNECTION, cwd=app)
        if not ans.get("success"):
            raise RuntimeError(f"flwr run refused the app: {ans.get('error-message', ans)}")
        return int(ans["run-id"])

    def status(self, run_id: int) -> dict:
        return self._flwr("ls", CONNECTION, "--run-id", str(run_id))["runs"][0]

    def wait(self, run_id: int, timeout_s: float) -> dict:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            st = self.status(run_id)
            if str(st.get("status", "")).startswith("finished:"):
                return st
            time.sleep(1.0)
        raise RuntimeError(f"run {run_id} did not finish within {timeout_s:.0f} s")

    def run(self, cfg: FleetConfig, timeout_s: float = 1800) -> dict:
        """Submit the fleet run, wait for it, return the server's results (cfg.out is required)."""
        if not cfg.out:
            raise UserError("a deployed fleet run needs an output directory (--out)")
        cfg = cfg.replace(out=str(Path(cfg.out).resolve()))
        st = self.wait(self.submit(cfg), timeout_s)
        if st["status"] != "finished:completed":
            raise RuntimeError(f"the fleet run ended {st['status']}: {st.get('status-details', '')}"[:2000])
        return json.loads((Path(cfg.out) / "results.json").read_text())
