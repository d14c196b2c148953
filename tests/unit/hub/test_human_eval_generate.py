"""The human-evaluation job: the worker answers a public-benchmark sample with the base and
an accepted adapter (the offline tiny base) and stores blind pairs."""

from __future__ import annotations

import io
import zipfile

import pytest

from quantgrid.hub.server import human_eval as he

from .test_web import _accept, _push

pytest.importorskip("torch")


def _random_adapter_zip(base: str) -> bytes:
    """A submission-like zip whose weights change the base's logits (LoRA B is not zero)."""
    import tempfile

    import torch

    from quantgrid.adapter import WEIGHTS
    from quantgrid.ml.models import attach_lora, load_base
    from quantgrid.recipe import Recipe

    model, _ = load_base(base)
    peft_model = attach_lora(model, Recipe(base_model=base))
    gen = torch.Generator().manual_seed(0)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            p.data = torch.randn(p.shape, generator=gen) * 0.5
    with tempfile.TemporaryDirectory() as tmp:
        peft_model.save_pretrained(tmp)
        weights = open(f"{tmp}/{WEIGHTS}", "rb").read()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(WEIGHTS, weights)
    return buf.getvalue()


def test_worker_generates_blind_pairs_for_an_accepted_adapter(tiny_base, tmp_path, db_url, monkeypatch):
    from fastapi.testclient import TestClient

    from quantgrid.hub.server import create_app
    from quantgrid.hub.server.auth import add_user
    from quantgrid.hub.server.job_kinds import handlers
    from quantgrid.hub.server.jobs import run_one
    from quantgrid.hub.server.models import HumanEvalItem, Job
    from quantgrid.hub.settings import HubSettings

    for var in ("QUANTGRID_HUB_CONFIG", "QUANTGRID_HUB_CONFIG_FILE", "QUANTGRID_HUB_RECIPE", "QUANTGRID_HUB_PORT"):
        monkeypatch.delenv(var, raising=False)
    settings = HubSettings.load(storage_dir=tmp_path / "hub", worker_enabled=False, db_url=db_url, base_model=tiny_base)
    app = create_app(settings)
    with TestClient(app) as client:
        db = app.state.db
        root = {"Authorization": f"Bearer {add_user(db, 'root', admin=True)}"}
        alice = {"Authorization": f"Bearer {add_user(db, 'alice')}"}
        sub = _push(client, alice, _random_adapter_zip(tiny_base))
        _accept(app, sub)
        r = client.post(f"/v1/human-eval/adapter/{sub}/generate", json={"n": 2, "max_new_tokens": 8, "seed": 1},
                        headers=root)
        assert r.status_code == 202
        assert run_one(db, settings, handlers([he.JOB_KIND]), "test-worker")
        with db.read() as s:
            job = s.get(Job, r.json()["job_id"])
            assert job.status == "done", job.error
            items = list(s.query(HumanEvalItem).order_by(HumanEvalItem.id))
        assert job.result == {"kind": "adapter", "target": str(sub), "pairs": 2, "added": 2}
        sample = he.sample_questions("finance-dev", 2, seed=1)
        assert [i.question_id for i in items] == [q for q, _ in sample]
        assert [i.question for i in items] == [ex.prompt for _, ex in sample]
        assert all(i.benchmark == "finance-dev" and i.target == str(sub) for i in items)
        # the adapter changes what the model says
        assert any(i.base_answer != i.candidate_answer for i in items)
