"""Helpers for hub integration tests: a real `quantgrid hub serve` process and the real CLI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

QUANTGRID = str(Path(sys.executable).with_name("quantgrid"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(config_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUANTGRID_",))}
    env.update({"QUANTGRID_CONFIG_DIR": str(config_dir), "COLUMNS": "200", "NO_COLOR": "1", **extra})
    return env


class _StoppableProcess:
    """Shared shutdown: terminate, wait up to 15 s, then SIGKILL; close the log file."""

    proc: subprocess.Popen | None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill9()
        if self.proc is not None:
            self._logf.close()
        self.proc = None


class HubProcess(_StoppableProcess):
    """``quantgrid hub serve`` on 127.0.0.1 with its own storage; restartable on the same port."""

    def __init__(self, storage: Path, *, port: int | None = None, args: tuple[str, ...] = (), env: dict | None = None,
                 db_url: str | None = None):
        self.storage = Path(storage)
        self.port = port or free_port()
        self.db_url = db_url or f"sqlite:///{(self.storage / 'hub.db').resolve()}"
        self.args = (*args, "--db", db_url) if db_url else args
        self.env = clean_env(self.storage.parent / "server-cfg", **(env or {}))
        self.proc: subprocess.Popen | None = None
        self.log = self.storage.parent / f"hub-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def admin(self, *args: str) -> str:
        """Run a `quantgrid hub ...` admin command against this hub's storage; returns stdout."""
        out = subprocess.run([QUANTGRID, "hub", *args, "--storage", str(self.storage)], env=self.env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def add_user(self, name: str, *, admin: bool = False) -> str:
        """Create a user straight in the hub's database (what `hub user add` does), return the token."""
        from quantgrid.hub.server.auth import add_user
        from quantgrid.hub.server.db import Database

        db = Database(self.db_url)
        try:
            return add_user(db, name, admin=admin)
        finally:
            db.dispose()

    def client_status(self, env: dict, submission_id: int) -> dict:
        """A submission as its owner sees it (over HTTP, with the token in ``env``)."""
        return httpx.get(f"{self.url}/v1/submissions/{submission_id}",
                         headers={"Authorization": f"Bearer {env['QUANTGRID_TOKEN']}"}, timeout=10).json()

    def start(self, timeout: float = 60.0) -> HubProcess:
        cmd = [QUANTGRID, "hub", "serve", "--port", str(self.port), "--storage", str(self.storage),
               "--log-level", "warning", *self.args]
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self._logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1) as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"hub exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
                try:
                    if http.get(f"{self.url}/v1/health").status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"hub did not come up: {self.log.read_text()[-2000:]}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._logf.close()


class WorkerProcess(_StoppableProcess):
    """``quantgrid hub worker`` as its own process (logs at info level, so each job it starts is listed)."""

    def __init__(self, storage: Path, db_url: str, *args: str, env: dict | None = None, name: str = "worker"):
        self.log = Path(storage).parent / f"{name}.log"
        self.cmd = [QUANTGRID, "hub", "worker", "--storage", str(storage), "--db", db_url, "--log-level", "info", *args]
        self.env = clean_env(Path(storage).parent / "server-cfg", **(env or {}))
        self.proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=self._logf, stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def jobs_started(self) -> list[int]:
        """Ids of the jobs this worker started, from its log."""
        import re

        return [int(m) for m in re.findall(r"job (\d+) \(\w+\) attempt \d+/\d+ started", self.log.read_text())]

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)


def cli(env: dict, *args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([QUANTGRID, *args], env=env, capture_output=True, text=True, input=input, timeout=timeout)
