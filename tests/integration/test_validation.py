"""End to end on a tiny-base hub: real adapters trained, packaged, pushed over HTTP, judged by the worker.

* a real adapter trained on finance data is accepted, with a rounded public score;
* a random-noise adapter and an adapter trained on unrelated text are rejected for loss
  reasons stated in the report;
* the accepted adapter re-pushed by another user is rejected as a duplicate.

Training two adapters on CPU takes minutes, so this is marked slow.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from quantgrid.adapter import BaseShape, expected_lora_shapes  # noqa: E402

# Two CPU trainings: minutes on a laptop, longer on a shared CI box.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def _train(tiny_base, recipe, examples, out):
    from quantgrid.data import write_records
    from quantgrid.ml.trainer import QuantGridTrainer

    data = out.parent / f"{out.name}.jsonl"
    write_records(data, examples, "qa")
    return QuantGridTrainer(tiny_base, recipe).train(data, out, num_epochs=3, batch_size=8, max_steps=50, lr=5e-4,
                                                     grad_accum=1, max_seq_length=256, progress="none")


def _unrelated_text(n: int):
    """Word salad from a non-finance vocabulary: text that teaches nothing about finance Q&A."""
    from quantgrid.data.types import Example

    rng = random.Random(1)
    words = [f"{a}{b}" for a in ("zor", "quib", "lant", "mep", "vrell", "dost") for b in ("ak", "in", "oul", "ex")]
    return [Example(" ".join(rng.choices(words, k=8)) + "?", " ".join(rng.choices(words, k=30))) for _ in range(n)]


def _push(client, auth, data: bytes) -> int:
    r = client.post("/v1/submissions", content=data, headers={
        **auth, "X-Content-SHA256": hashlib.sha256(data).hexdigest(), "Content-Type": "application/zip"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_tiny_hub_accepts_real_work_and_rejects_noise_unrelated_and_copies(tiny_base, tmp_path, monkeypatch):
    from malicious import generator as g

    from quantgrid.data.finance import generate
    from quantgrid.hub.server import create_app, jobs
    from quantgrid.hub.server.auth import add_user
    from quantgrid.hub.settings import HubSettings
    from quantgrid.hub.submit import prepare_submission

    for var in ("QUANTGRID_HUB_CONFIG", "QUANTGRID_HUB_CONFIG_FILE", "QUANTGRID_HUB_RECIPE"):
        monkeypatch.delenv(var, raising=False)
    # The hub's default thresholds; only the benchmark is smaller than the default 500 items.
    settings = HubSettings.load(storage_dir=tmp_path / "hub", worker_enabled=False, benchmark_size=100,
                                recipe={"base_model": tiny_base}, max_upload_bytes=16 << 20)
    recipe = settings.recipe
    fin_dir = _train(tiny_base, recipe, generate(600, seed=7), tmp_path / "fin")
    unrel_dir = _train(tiny_base, recipe, _unrelated_text(600), tmp_path / "unrelated")
    fin_zip = prepare_submission(fin_dir, "alice", "generated finance Q&A", tmp_path, quiet=True).read_bytes()
    unrel_zip = prepare_submission(unrel_dir, "carol", "word salad", tmp_path / "u", quiet=True).read_bytes()
    base = BaseShape.from_dir(tiny_base)
    rng = np.random.default_rng(0)
    noise_zip = g.submission_for({k: (rng.standard_normal(s) * 0.3).astype(np.float32)
                                  for k, s in expected_lora_shapes(recipe, base).items()}, recipe, base)

    app = create_app(settings)
    with TestClient(app) as client:
        auth = {n: {"Authorization": f"Bearer {add_user(app.state.db, n)}"} for n in ("alice", "bob", "carol")}

        def judge(user: str, data: bytes) -> dict:
            sub_id = _push(client, auth[user], data)
            assert jobs.run_one(app.state.db, settings, jobs.resolve_handlers(["validate"]), "it-worker")
            return client.get(f"/v1/submissions/{sub_id}", headers=auth[user]).json()

        fin = judge("alice", fin_zip)
        assert fin["status"] == "accepted", fin["report"]
        assert fin["score"] > 0.01 and round(fin["score"], settings.score_decimals) == fin["score"]
        assert [c["passed"] for c in fin["report"]["checks"]] == [True] * len(fin["report"]["checks"])

        noise = judge("bob", noise_zip)
        assert noise["status"] == "rejected"
        assert (noise["report"]["stage"], noise["report"]["check"]) == ("loss", "proof_of_loss")
        assert noise["report"]["numbers"]["improvement"] < 0 and noise["report"]["diagnoses"]

        unrel = judge("carol", unrel_zip)
        assert unrel["status"] == "rejected"
        assert (unrel["report"]["stage"], unrel["report"]["check"]) == ("loss", "proof_of_loss"), unrel["report"]
        assert unrel["report"]["numbers"]["improvement"] < settings.min_loss_improvement
        assert unrel["report"]["diagnoses"]

        copy = judge("bob", fin_zip)  # the same bytes, another user: a new submission
        assert copy["status"] == "rejected", copy["report"]
        assert (copy["report"]["stage"], copy["report"]["check"]) == ("duplicate", "near_duplicate")
        assert copy["report"]["numbers"]["cosine"] == pytest.approx(1.0, abs=1e-3)
        assert copy["report"]["numbers"]["original"] == str(fin["id"])

        print({"finance": fin["report"]["checks"][1]["numbers"], "finance_ood": fin["report"]["checks"][2]["numbers"],
               "noise": noise["report"]["numbers"], "unrelated": unrel["report"]["numbers"],
               "copy": copy["report"]["numbers"]})
        board = client.get("/v1/adapters").json()["items"]
        assert [a["id"] for a in board] == [fin["id"]]
