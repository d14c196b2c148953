"""`quantgrid push` with what users have: an adapter directory, or `zip -r adapter.zip ./adapter`.

A real `quantgrid hub serve` on 127.0.0.1 and the real CLI; the zip the hub stores is read
back to prove nothing of the contributor's data arrived.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile

import pytest

pytest.importorskip("fastapi")

from _hub_process import HubProcess, clean_env, cli  # noqa: E402
from contrib_helpers import make_adapter_dir  # noqa: E402


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    h = HubProcess(tmp_path_factory.mktemp("pushhub") / "storage", args=("--no-worker",))
    h.start()
    h.token = h.add_user("ada")
    yield h
    h.stop()


def _stored(hub, sha256: str) -> dict[str, str]:
    """The entries of the blob the hub stored for a push."""
    blob = next(p for p in hub.storage.rglob(f"*{sha256}*") if p.is_file())
    with zipfile.ZipFile(blob) as zf:
        return {n: zf.read(n).decode("utf-8", errors="replace") for n in zf.namelist()}


def _secrets(adapter) -> list[str]:
    out = []
    for f in ("training/dataset.jsonl", "eval/benchmark.jsonl"):
        for line in (adapter / f).read_text().splitlines():
            out += [str(v) for v in json.loads(line).values() if len(str(v)) >= 4]
    return out + [str(adapter.resolve()), "fourteen"]


def test_push_an_adapter_directory_packages_it_first(hub, tmp_path):
    d = make_adapter_dir(tmp_path / "adapters", name="your-domain")
    env = clean_env(tmp_path / "cfg", QUANTGRID_HUB=hub.url, QUANTGRID_TOKEN=hub.token)
    r = cli(env, "push", str(d), "--json")
    assert r.returncode == 0, r.stderr
    assert "is an adapter directory: packaged it as quantgrid_submission_" in r.stderr
    assert "Left out training/dataset.jsonl: your training data" in r.stderr
    assert "Left out eval/benchmark.jsonl" in r.stderr and "Left out eval/REPORT.md" in r.stderr
    sub = json.loads(r.stdout)
    assert sub["status"] == "queued" and sub["filename"].startswith("quantgrid_submission_")
    entries = _stored(hub, sub["sha256"])
    assert set(entries) == {"adapter_config.json", "adapter_model.safetensors", "quantgrid.json",
                            "training/train_config.yaml", "training/TRAINING_LOG.md", "training/loss.png",
                            "eval/results.json"}
    leaks = [(n, s) for n, body in entries.items() for s in _secrets(d) if s in body]
    assert not leaks, leaks[:3]
    assert not list(tmp_path.glob("quantgrid_submission_*.zip"))  # the temporary package is cleaned up


@pytest.mark.parametrize("how", ["one top-level folder", "contents at the top"])
def test_push_a_zip_of_an_adapter_directory_repackages_it(hub, tmp_path, how):
    """The Colab path: `zip -r adapter.zip ./adapter` (with its directory entries) used to be refused."""
    d = make_adapter_dir(tmp_path, name="adapter")
    z = tmp_path / "adapter.zip"
    if how == "one top-level folder":
        subprocess.run(["zip", "-qr", str(z), "./adapter"], cwd=tmp_path, check=True)
    else:
        subprocess.run(["zip", "-qr", str(z), "."], cwd=d, check=True)
    with zipfile.ZipFile(z) as zf:
        assert any(n.endswith("/") for n in zf.namelist())  # the directory entries the hub refuses
        assert any(n.endswith("training/dataset.jsonl") for n in zf.namelist())
    env = clean_env(tmp_path / "cfg", QUANTGRID_HUB=hub.url, QUANTGRID_TOKEN=hub.token)
    r = cli(env, "push", str(z), "--json")
    assert r.returncode == 0, r.stderr
    assert "adapter.zip is a zip of an adapter directory" in r.stderr and "repackaged it as" in r.stderr
    assert "Left out training/dataset.jsonl: your training data" in r.stderr
    sub = json.loads(r.stdout)
    entries = _stored(hub, sub["sha256"])
    assert "eval/benchmark.jsonl" not in entries and "adapter/" not in entries
    leaks = [(n, s) for n, body in entries.items() for s in _secrets(d) if s in body]
    assert not leaks, leaks[:3]


def test_push_a_package_sends_it_unchanged_and_bad_input_is_clear(hub, tmp_path):
    from quantgrid.hub.submit import package
    from quantgrid.utils import sha256_file

    d = make_adapter_dir(tmp_path)
    z = package(d, "ada", "finance", tmp_path, quiet=True).path
    env = clean_env(tmp_path / "cfg", QUANTGRID_HUB=hub.url, QUANTGRID_TOKEN=hub.token)
    r = cli(env, "push", str(z), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["sha256"] == sha256_file(z) and "as it is" in r.stderr
    # a directory whose manifest lacks the author cannot be packaged for the user: say what to run
    m = json.loads((d / "quantgrid.json").read_text())
    m["author"] = None
    (d / "quantgrid.json").write_text(json.dumps(m))
    r = cli(env, "push", str(d))
    assert r.returncode != 0 and "quantgrid package" in r.stderr and "Traceback" not in r.stderr
    shutil.rmtree(d)
    r = cli(env, "push", str(d))
    assert r.returncode != 0 and "no such file or directory" in r.stderr and "Traceback" not in r.stderr


def test_the_hub_serves_registry_yaml_and_quantgrid_registry_writes_it(hub, tmp_path):
    import httpx
    import yaml

    r = httpx.get(f"{hub.url}/v1/registry.yaml", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/yaml")
    reg = yaml.safe_load(r.text)
    assert reg["registry_version"] == 1 and reg["source"] == "hub"
    assert reg["adapters"] == []  # pushes are queued, not accepted, on a hub without a worker
    env = clean_env(tmp_path / "cfg", QUANTGRID_HUB=hub.url)
    out = tmp_path / "registry.yaml"
    r = cli(env, "registry", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(out.read_text())["adapters"] == [] and "0 adapter(s) (hub)" in r.stdout
