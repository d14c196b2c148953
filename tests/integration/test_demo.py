"""`quantgrid demo --quick` end to end: a demo failure is a test failure."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "160"}
    proc = subprocess.run([sys.executable, "-m", "quantgrid.cli", "demo", "--quick", "--workdir", str(work)],
                          capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return work, proc.stdout, json.loads((work / "demo_summary.json").read_text())


def test_three_accepted_noise_and_copy_rejected_with_reasons(demo_run):
    _, _, summary = demo_run
    subs = summary["submissions"]
    assert {k: v["status"] for k, v in subs.items()} == {
        "alice": "accepted", "bob": "accepted", "carol": "accepted",
        "mallory-noise": "rejected", "mallory-copy": "rejected"}
    assert "hidden-benchmark loss" in subs["mallory-noise"]["reason"]
    assert "cosine" in subs["mallory-copy"]["reason"] and "accepted adapter" in subs["mallory-copy"]["reason"]


def test_adapters_beat_the_base_and_a_release_is_published(demo_run):
    _, _, summary = demo_run
    assert set(summary["adapter_loss"]) == {"alice", "bob", "carol"}
    assert all(loss < summary["base_loss"] for loss in summary["adapter_loss"].values())
    assert re.fullmatch(r"\d{4}\.\d{2}(\.\d+)?", summary["release"]["version"])
    contributors = {e["contributor"]: e for e in summary["leaderboard"]}
    assert contributors["alice"]["accepted"] == 1 and "mallory" not in contributors or \
        contributors["mallory"]["accepted"] == 0


def test_the_release_is_served_through_openai_and_auto(demo_run):
    _, stdout, summary = demo_run
    assert any(k.startswith("quantgrid (served by local") for k in summary["answers"])
    assert any(k.startswith("auto (served by") for k in summary["answers"])
    assert "summary" in stdout and "Leaderboard" in stdout


def test_export_and_cleanup(demo_run):
    from pathlib import Path

    work, _, summary = demo_run
    arts = summary["artifacts"]
    for name in ("GGUF base", "GGUF adapter", "Modelfile", "release"):
        assert Path(arts[name]).exists(), name
    assert Path(arts["Modelfile"]).read_text().startswith("FROM ./base.gguf\nADAPTER ./adapter.gguf")
    # no server left behind: nothing still listens for the demo
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(work) not in out
