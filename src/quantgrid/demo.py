"""`quantgrid demo`: the four journeys end to end, offline, on the embedded defaults.

Contributors train on the tiny base and push to a real hub process on 127.0.0.1; the
hub validates (three accepted; a noise adapter and a copy rejected), releases, and a
real `quantgrid serve` process answers through the OpenAI client; the release is then
exported to GGUF + Modelfile. Servers are child processes owned by one ExitStack, so
they are stopped on success, on error and on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from quantgrid import lora_files
from quantgrid.errors import QuantGridError

# Three simulated contributors, each with its own topic mix (and so its own data).
CONTRIBUTORS = {
    "alice": ["valuation", "ratios", "corporate_finance"],
    "bob": ["fixed_income", "time_value"],
    "carol": ["risk", "portfolio", "options", "trading"],
}


@dataclass(frozen=True)
class DemoSize:
    base: str  # tiny base size
    n_train: int  # examples per contributor
    max_steps: int  # training steps per adapter
    batch_size: int
    eval_limit: int  # dev-benchmark items for the contributor-side eval
    hidden_size: int  # hub's hidden benchmark items
    lr: float  # high for a tiny model; the bigger base forgets general text faster, so lower


FULL = DemoSize(base="demo", n_train=600, max_steps=60, batch_size=8, eval_limit=120, hidden_size=150, lr=5e-4)
QUICK = DemoSize(base="test", n_train=200, max_steps=30, batch_size=8, eval_limit=40, hidden_size=40, lr=2e-3)


@dataclass
class DemoResult:
    workdir: Path
    base_loss: float | None = None
    adapter_loss: dict[str, float] = field(default_factory=dict)
    submissions: dict[str, dict[str, Any]] = field(default_factory=dict)
    release: dict[str, Any] = field(default_factory=dict)
    answers: dict[str, str] = field(default_factory=dict)
    leaderboard: list[dict[str, Any]] = field(default_factory=list)
    artifacts: dict[str, Path] = field(default_factory=dict)


class DemoError(QuantGridError):
    code = "demo_failed"


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float) -> None:
    """Ask ``proc`` to exit (SIGTERM), and kill it if it is still running ``timeout`` seconds later."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "quantgrid.cli", *args]


@contextlib.contextmanager
def server(args: list[str], url: str, log_path: Path, ready_path: str, timeout: float = 180) -> Iterator[str]:
    """Run a server process until the block ends; yield its URL once ``ready_path`` answers."""
    import httpx

    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise DemoError(f"{args[3]} {args[4] if len(args) > 4 else ''} exited early "
                                    f"(code {proc.returncode})", hint=f"see its log: {log_path}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + ready_path, timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise DemoError(f"server at {url} did not start in {timeout:.0f}s", hint=f"see {log_path}")
                time.sleep(0.3)
            yield url
        finally:
            stop_process(proc, timeout=15)


# ---------------------------------------------------------------- steps


class Demo:
    def __init__(self, workdir: Path, size: DemoSize, console: Console):
        self.w, self.size, self.console = workdir, size, console
        self.result = DemoResult(workdir=workdir)
        self.step_no = 0

    def step(self, title: str) -> None:
        self.step_no += 1
        self.console.rule(f"[bold]{self.step_no}. {title}")

    # 1
    def build_base(self) -> str:
        from quantgrid.ml.models import build_tiny_base

        self.step(f"Build the offline tiny base ({self.size.base})")
        path = build_tiny_base(self.w / "base", size=self.size.base, seed=0)
        self.console.print(f"base model: {path}")
        self.result.artifacts["base model"] = path
        return str(path)

    # 2
    def train(self, base: str) -> dict[str, Path]:
        from quantgrid.data import write_records
        from quantgrid.data.finance import generate
        from quantgrid.ml.trainer import QuantGridTrainer

        self.step("Three contributors train adapters on their own (private) data")
        adapters = {}
        for i, (name, topics) in enumerate(CONTRIBUTORS.items()):
            data = self.w / "contributors" / name / "private_data.jsonl"
            write_records(data, generate(self.size.n_train, seed=100 + i, topics=topics))
            self.console.print(f"[bold]{name}[/]: {self.size.n_train} examples on {', '.join(topics)}")
            out = self.w / "contributors" / name / "adapter"
            adapters[name] = QuantGridTrainer(base_model=base, console=self.console).train(
                dataset_path=data, output_dir=out, num_epochs=20, batch_size=self.size.batch_size, grad_accum=1,
                max_steps=self.size.max_steps, lr=self.size.lr, overwrite=True,
                # A seed of its own per contributor, as independent runs draw, but fixed: without
                # it the demo's verdicts vary from run to run (alice's general-domain loss rise
                # landed on either side of the 5% gate).
                seed=100 + i)
        return adapters

    # 3
    def evaluate(self, base: str, adapters: dict[str, Path]) -> None:
        from quantgrid.eval.harness import EvalConfig, run_eval

        self.step("Each contributor evaluates their adapter against the base")
        table = Table("adapter", "base loss", "adapter loss", "delta (nats/token)", "verdict")
        for name, adapter in adapters.items():
            ev = run_eval(EvalConfig(benchmark="builtin:finance-dev", adapter=adapter, base_model=base,
                                     metrics=["loss"], limit=self.size.eval_limit, write_into_adapter=True,
                                     bootstrap=200))
            r = ev.results
            self.result.base_loss = r.base_loss
            self.result.adapter_loss[name] = r.adapter_loss
            table.add_row(name, f"{r.base_loss:.3f}", f"{r.adapter_loss:.3f}", f"{r.loss.delta:+.3f}",
                          "pass" if r.verdict and r.verdict.passed else "fail")
        self.console.print(table)

    # 4
    def package_all(self, adapters: dict[str, Path]) -> dict[str, Path]:
        from quantgrid.hub.submit import prepare_submission

        self.step("Package the adapters (plus a noise adapter and a copy)")
        noise = make_noise_adapter(adapters["bob"], self.w / "contributors" / "mallory" / "noise")
        copy_src = adapters["alice"]
        zips = {}
        for who, adapter, author in (*((n, a, n) for n, a in adapters.items()),
                                     ("mallory-noise", noise, "mallory"), ("mallory-copy", copy_src, "mallory")):
            out = self.w / "submissions" / who
            zips[who] = prepare_submission(adapter_dir=adapter, author_name=author,
                                           dataset_desc=f"demo data: {', '.join(CONTRIBUTORS.get(who, ['copied']))}",
                                           out_dir=out, quiet=True)
            self.console.print(f"{who}: {zips[who]}")
        return zips

    def push_and_validate(self, hub: str, storage: Path, zips: dict[str, Path]) -> None:
        from quantgrid.hub.client import HubClient

        self.step("Push to the hub and validate: proof of loss, dedup")
        tokens = {user: add_user(storage, user) for user in ("alice", "bob", "carol", "mallory")}
        ids = {}
        # The copy is pushed last, after the original is accepted, as a real copier would.
        for who, path in zips.items():
            user = who.split("-")[0]
            if who == "mallory-copy":
                self.wait_for(hub, tokens, {k: v for k, v in ids.items() if k == "alice"})
            with HubClient(hub, tokens[user]) as client:
                ids[who] = client.push(path).id
            self.console.print(f"pushed {who}: submission {ids[who]}")
        self.wait_for(hub, tokens, ids)
        table = Table("submission", "status", "reason")
        for who, info in self.result.submissions.items():
            table.add_row(who, info["status"], info["reason"])
        self.console.print(table)

    def wait_for(self, hub: str, tokens: dict[str, str], ids: dict[str, int], timeout: float = 900) -> None:
        from quantgrid.hub.client import HubClient

        deadline = time.monotonic() + timeout
        with self.console.status("validating ...") as status:
            for who, sid in ids.items():
                with HubClient(hub, tokens[who.split("-")[0]]) as client:
                    while (sub := client.submission(sid)).status not in ("accepted", "rejected"):
                        if time.monotonic() > deadline:
                            raise DemoError(f"submission {sid} still {sub.status} after {timeout:.0f}s")
                        status.update(f"validating {who} ({sub.status}) ...")
                        time.sleep(1)
                self.result.submissions[who] = {"id": sid, "status": sub.status, "score": sub.score,
                                                "reason": report_reason(sub.report)}

    # 6
    def release(self, base: str, storage: Path) -> None:
        self.step("Build the weekly release YYYY.WW")
        proc = subprocess.run(_cli("hub", "release", "--storage", str(storage), "--base-model", base),
                              capture_output=True, text=True)
        self.console.print(proc.stdout.strip())
        if proc.returncode != 0 or "published" not in proc.stdout:
            raise DemoError("the release was not published", hint=(proc.stderr or proc.stdout).strip()[-2000:])

    # 7
    def serve(self, base: str, hub: str) -> None:
        from openai import OpenAI

        self.step("Serve the release; ask through the OpenAI API (release and auto routing)")
        port = free_port()
        args = _cli("serve", "--base", base, "--hub", hub, "--release", "latest", "--port", str(port),
                    "--log-level", "warning")
        for name, adapter in self._adapters.items():
            args += ["--adapter", f"{name}={adapter}"]
        with server(args, f"http://127.0.0.1:{port}", self.w / "logs" / "serve.log", "/health") as url:
            client = OpenAI(base_url=url + "/v1", api_key="not-needed")
            question = "What is the price to earnings ratio of a stock trading at $50 with EPS of $2.50?"
            for model in ("quantgrid", "auto"):
                raw = client.chat.completions.with_raw_response.create(
                    model=model, messages=[{"role": "user", "content": question}], max_tokens=32, temperature=0)
                answer = raw.parse().choices[0].message.content
                backend = raw.headers.get("x-quantgrid-backend", "?")
                adapter = raw.headers.get("x-quantgrid-adapter") or "base"
                self.result.answers[f"{model} (served by {backend}, adapter {adapter})"] = answer
                self.console.print(f"[bold]{model}[/] -> {backend}, adapter {adapter}: {answer!r}")

    # 8
    def export(self, base: str, hub: str) -> None:
        from quantgrid.hub.client import HubClient

        self.step("Export the release to GGUF + an Ollama Modelfile")
        from quantgrid.serve.deploy import unpack_release

        with HubClient(hub) as client:
            version = client.latest_release().version
            archive = client.download_release(version, self.w / "release" / f"{version}.zip")
        release_dir = unpack_release(archive.read_bytes(), self.w / "release" / version)
        out = self.w / "export"
        proc = subprocess.run(_cli("export", "ollama", "--adapter", str(release_dir), "--base", base,
                                   "--out", str(out), "--name", "quantgrid-demo"), capture_output=True, text=True)
        if proc.returncode != 0:
            raise DemoError("export failed", hint=proc.stderr.strip()[-2000:])
        self.console.print(proc.stdout.strip())
        self.result.artifacts.update({"release": release_dir, "GGUF base": out / "base.gguf",
                                      "GGUF adapter": out / "adapter.gguf", "Modelfile": out / "Modelfile"})

    def run(self) -> DemoResult:
        self.w.mkdir(parents=True, exist_ok=True)
        (self.w / "logs").mkdir(exist_ok=True)
        base = self.build_base()
        self._adapters = self.train(base)
        self.result.artifacts.update({f"adapter {n}": p for n, p in self._adapters.items()})
        self.evaluate(base, self._adapters)
        zips = self.package_all(self._adapters)
        storage = self.w / "hub"
        write_hub_config(storage, base, self.size)
        port = free_port()
        hub_args = _cli("hub", "serve", "--port", str(port), "--config", str(storage / "hub.yaml"))
        with server(hub_args, f"http://127.0.0.1:{port}", self.w / "logs" / "hub.log", "/v1/health") as hub:
            self.push_and_validate(hub, storage, zips)
            self.release(base, storage)
            self.serve(base, hub)
            self.export(base, hub)
            self.collect(hub)
        self.result.artifacts["hub storage"] = storage
        return self.result

    def collect(self, hub: str) -> None:
        from quantgrid.hub.client import HubClient

        with HubClient(hub) as client:
            self.result.leaderboard = [e.model_dump() for e in client.leaderboard().entries]
            latest = client.latest_release()
        self.result.release = {"version": latest.version, "metrics": latest.metrics or {}}


# ---------------------------------------------------------------- helpers


def write_hub_config(storage: Path, base: str, size: DemoSize) -> Path:
    import yaml

    storage.mkdir(parents=True, exist_ok=True)
    cfg = {"storage_dir": str(storage), "recipe": {"base_model": str(Path(base).resolve())},
           "benchmark_size": size.hidden_size, "worker_poll_seconds": 0.5}
    path = storage / "hub.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def add_user(storage: Path, name: str) -> str:
    from quantgrid.hub.server.auth import add_user as _add
    from quantgrid.hub.server.db import Database

    return _add(Database(f"sqlite:///{(storage / 'hub.db').resolve()}"), name)


def make_noise_adapter(src: Path, out: Path) -> Path:
    """A copy of ``src`` whose LoRA factors are replaced by random noise of the same norm."""
    import torch
    from safetensors.torch import load_file, save_file

    from quantgrid.adapter import read_manifest, write_manifest
    from quantgrid.recipe import Recipe

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("eval"))
    weights = load_file(str(out / lora_files.WEIGHTS))
    gen = torch.Generator().manual_seed(7)
    noisy = {k: torch.randn(v.shape, generator=gen) * (v.norm() / v.numel() ** 0.5) for k, v in weights.items()}
    save_file(noisy, str(out / lora_files.WEIGHTS))
    m = read_manifest(out)
    write_manifest(out, recipe=Recipe.from_dict(m.recipe), base_name=m.base_model.name,
                   base_fingerprint=m.base_model.fingerprint, previous=m.model_copy(update={"eval": None}))
    return out


def report_reason(report: dict | None) -> str:
    if not report:
        return ""
    for key in ("reason", "summary", "message"):
        if report.get(key):
            return str(report[key])
    return json.dumps(report)[:200]


def summary(result: DemoResult, console: Console) -> None:
    console.rule("[bold green]quantgrid demo: summary")
    losses = Table("model", "loss (nats/token)", title="Proof of loss (finance dev set unless noted)")
    if result.base_loss is not None:
        losses.add_row("base", f"{result.base_loss:.3f}")
    for name, loss in result.adapter_loss.items():
        losses.add_row(f"adapter {name}", f"{loss:.3f}")
    bench = (result.release.get("metrics") or {}).get("benchmark")
    if bench:
        # Measured by the hub on its hidden benchmark, not on the dev set above.
        losses.add_row(f"release {result.release['version']}: hidden benchmark, base -> release",
                       f"{bench['previous']:.3f} -> {bench['new']:.3f}")
    console.print(losses)
    board = Table("rank", "contributor", "accepted", "impact", "upvotes", title="Leaderboard")
    for e in result.leaderboard:
        board.add_row(str(e["rank"]), e["contributor"], str(e["accepted"]), f"{e['impact']:.4f}", str(e["upvotes"]))
    console.print(board)
    arts = Table("artifact", "path", title="Artifacts")
    for name, path in result.artifacts.items():
        arts.add_row(name, str(path))
    console.print(arts)


def write_summary(result: DemoResult, path: Path) -> Path:
    """The summary as JSON, for scripts and tests."""
    from quantgrid.utils import atomic_write_text

    data = {"base_loss": result.base_loss, "adapter_loss": result.adapter_loss, "submissions": result.submissions,
            "release": result.release, "answers": result.answers, "leaderboard": result.leaderboard,
            "artifacts": {k: str(v) for k, v in result.artifacts.items()}}
    return atomic_write_text(path, json.dumps(data, indent=2, default=str))


def run_demo(workdir: Path | None = None, *, quick: bool = False, console: Console | None = None) -> DemoResult:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the demo prints its own progress; per-file load bars are noise
    console = console or Console()
    keep = workdir is not None
    workdir = Path(workdir) if keep else Path(tempfile.mkdtemp(prefix="quantgrid-demo-"))
    t0 = time.monotonic()
    result = Demo(workdir, QUICK if quick else FULL, console).run()
    summary(result, console)
    write_summary(result, workdir / "demo_summary.json")
    console.print(f"finished in {time.monotonic() - t0:.0f}s; workspace: {workdir}")
    return result
