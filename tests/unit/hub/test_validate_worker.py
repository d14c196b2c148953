"""The ``validate`` job on a real in-process hub: push over HTTP, the worker judges, status shows the report."""

from __future__ import annotations

import hashlib

import numpy as np
from malicious import generator as g

from quantgrid.adapter import BaseShape, expected_lora_shapes
from quantgrid.hub.server import jobs


def _push(client, auth, data: bytes) -> int:
    r = client.post("/v1/submissions", content=data, headers={
        **auth, "X-Content-SHA256": hashlib.sha256(data).hexdigest(), "Content-Type": "application/zip"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _work(settings, app) -> None:
    assert jobs.run_one(app.state.db, settings, jobs.resolve_handlers(["validate"]), "test-worker")


def test_validate_handler_is_registered():
    assert "validate" in jobs.resolve_handlers(["validate"])


def test_worker_rejects_noise_and_hostile_zips_with_reports(hub):
    settings, app, client, tokens = hub
    recipe, base = settings.recipe, BaseShape.from_dir(settings.recipe.base_model)
    rng = np.random.default_rng(0)
    noise = {k: (rng.standard_normal(s) * 0.3).astype(np.float32)
             for k, s in expected_lora_shapes(recipe, base).items()}
    noise_id = _push(client, tokens["alice"], g.submission_for(noise, recipe, base))
    evil_id = _push(client, tokens["alice"], g.KINDS["symlink"][0]("x"))
    _work(settings, app)
    _work(settings, app)
    noise_out = client.get(f"/v1/submissions/{noise_id}", headers=tokens["alice"]).json()
    assert noise_out["status"] == "rejected"
    assert noise_out["report"]["stage"] == "loss" and noise_out["report"]["check"] == "proof_of_loss"
    assert noise_out["report"]["diagnoses"] and noise_out["score"] is None
    evil_out = client.get(f"/v1/submissions/{evil_id}", headers=tokens["alice"]).json()
    assert evil_out["status"] == "rejected"
    assert (evil_out["report"]["stage"], evil_out["report"]["check"]) == ("static", "archive.symlink")
    # the report is the owner's: another user cannot see the submission at all
    assert client.get(f"/v1/submissions/{noise_id}", headers=tokens["bob"]).status_code == 404
    # nothing was accepted, so nothing is on the leaderboard's adapter list
    assert client.get("/v1/adapters").json()["items"] == []
