"""The hive mind end to end: independent contributors, copies, and a release better than any adapter in it.

A real `quantgrid hub serve` process on 127.0.0.1 (worker in process, the hub's default
thresholds), driven only through the real CLI:

* four contributors each write their own data (their own topics, each in another file
  format) and run `quantgrid train --hub URL` with the recipe's defaults (every run draws
  its own seed), `quantgrid package` and `quantgrid push`: all four are accepted;
* another user pushes one of them re-zipped, and a third pushes another with lora_B
  scaled by 1.01: both are rejected as near-duplicates;
* `quantgrid hub release` publishes a release that beats the best single accepted adapter
  on the held-out half of the hidden benchmark and keeps at least 80% of each
  contributor's own-topic gain. The test prints the release's quality table.

Four CPU trainings with the recipe's defaults: minutes, so this is marked slow.
Run it with ``pytest -m slow tests/integration/test_hive_e2e.py -s``.
"""

from __future__ import annotations

import io
import json
import subprocess
import time
import zipfile
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")

from _hub_process import QUANTGRID, HubProcess, clean_env, cli  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(5400)]

CONTRIBUTORS = {  # name: (topics, data format, examples)
    "alice": (["options"], "qa", 240),
    "bob": (["fixed_income"], "messages", 240),
    "carol": (["valuation", "ratios"], "alpaca", 240),
    "dave": (["risk", "portfolio"], "text", 240),
}


def _wait(hub: HubProcess, env: dict, sub_id: int, timeout: float = 900) -> dict:
    deadline = time.monotonic() + timeout
    while (status := hub.client_status(env, sub_id))["status"] in ("queued", "validating"):
        assert time.monotonic() < deadline, f"submission {sub_id} never validated: {status}"
        time.sleep(1)
    return status


def _push(env: dict, path: Path) -> int:
    r = cli(env, "push", str(path), "--json", timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["id"]


def _rewritten(zip_path: Path, out: Path, scale_b: float | None = None) -> Path:
    """The same submission zipped again by someone else (other order, no compression),
    optionally with every lora_B tensor scaled."""
    from safetensors.torch import load, save

    with zipfile.ZipFile(zip_path) as zf:
        files = {n: zf.read(n) for n in zf.namelist() if not n.endswith("/")}
    if scale_b is not None:
        tensors = load(files["adapter_model.safetensors"])
        files["adapter_model.safetensors"] = save({k: v * scale_b if ".lora_B." in k else v
                                                   for k, v in tensors.items()}, metadata={"format": "pt"})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(files, reverse=True):
            zf.writestr(name, files[name])
    out.write_bytes(buf.getvalue())
    return out


def test_independent_contributors_copies_and_a_release_better_than_every_adapter(tiny_base, tmp_path):
    from quantgrid.data.finance import generate
    from quantgrid.data.formats import write_records

    hub = HubProcess(tmp_path / "storage", args=("--base-model", tiny_base, "--release-schedule", "off",
                                                 "--benchmark-size", "270"))
    hub.start()
    try:
        zips, ids, envs = {}, {}, {}
        for i, (name, (topics, fmt, n)) in enumerate(CONTRIBUTORS.items()):
            env = envs[name] = clean_env(tmp_path / f"cfg-{name}", QUANTGRID_HUB=hub.url,
                                         QUANTGRID_TOKEN=hub.add_user(name))
            data = write_records(tmp_path / f"{name}.jsonl", generate(n, 5000 + i, topics), fmt)
            out = tmp_path / f"adapter-{name}"
            r = cli(env, "train", "--hub", hub.url, "--dataset", str(data), "--output", str(out), timeout=1800)
            assert r.returncode == 0, r.stderr[-3000:]
            pkg = tmp_path / f"pkg-{name}"
            r = cli(env, "package", str(out), "--author", name, "--dataset-desc",
                    f"generated {', '.join(topics)} questions ({fmt})", "--out", str(pkg), timeout=300)
            assert r.returncode == 0, r.stderr[-3000:]
            zips[name] = next(pkg.glob("quantgrid_submission_*.zip"))
            ids[name] = _push(env, zips[name])
        for name in CONTRIBUTORS:
            status = _wait(hub, envs[name], ids[name])
            assert status["status"] == "accepted", (name, status["report"])
            loss = next(c for c in status["report"]["checks"] if c["check"] == "proof_of_loss")
            print(f"{name}: accepted: {loss['message']}")

        copies = {"eve": _rewritten(zips["alice"], tmp_path / "eve.zip"),
                  "frank": _rewritten(zips["bob"], tmp_path / "frank.zip", scale_b=1.01)}
        for name, path in copies.items():
            env = clean_env(tmp_path / f"cfg-{name}", QUANTGRID_HUB=hub.url, QUANTGRID_TOKEN=hub.add_user(name))
            status = _wait(hub, env, _push(env, path))
            report = status["report"]
            assert status["status"] == "rejected", (name, report)
            assert (report["stage"], report["check"]) == ("duplicate", "near_duplicate"), (name, report)
            print(f"{name}: rejected: {report['message']}")

        r = subprocess.run([QUANTGRID, "hub", "release", "--storage", str(hub.storage), "--base-model", tiny_base,
                            "--no-impact"], env=hub.env, capture_output=True, text=True, timeout=3600)
        assert r.returncode == 0 and "published" in r.stdout, r.stdout + r.stderr[-3000:]
        latest = httpx.get(f"{hub.url}/v1/releases/latest", timeout=30).json()
        manifest = json.loads((Path(hub.storage) / "releases" / latest["version"] / "release.json").read_text())
        q = manifest["quality"]
        notes = latest["notes"]
        print(notes[notes.index("## Release against each adapter alone"):].split("\n## ")[0])
        assert len(manifest["adapters"]) == len(CONTRIBUTORS)
        assert q["beats_best_single"], q["overall"]
        assert q["min_retention"] >= 0.8, q["retention"]
    finally:
        hub.stop()
