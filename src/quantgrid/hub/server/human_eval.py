"""Human evaluation: maintainers grade a candidate's answers next to the base's, blind.

A *candidate* is an accepted adapter (``target_kind="adapter"``, ``target`` its id) or a
published release (``"release"``, its version). Its answers and the base's on a sample of a
PUBLIC benchmark (the built-in ``finance-dev`` or ``alpha-bench`` sets, never the hidden
one) are stored as pairs, one per question. Each pair's display order (which answer is "A")
is drawn at random when it is stored and kept server-side; the grading page shows only
"Answer A" and "Answer B", and the grade is mapped back to base/candidate on the server.

The rubric (QuantConnect's and BullishAI's): clarity, correctness, number accuracy and
strategy quality, each 1-5, and a risk flag (does the answer flag the risk: yes/no).

| method | path                                          | auth       | what                                    |
|--------|-----------------------------------------------|------------|-----------------------------------------|
| POST   | /v1/human-eval/{kind}/{target}/pairs          | maintainer | store answer pairs a maintainer made     |
| POST   | /v1/human-eval/{kind}/{target}/generate       | maintainer | queue a job that generates them          |
| GET    | /v1/human-eval                                | -          | aggregated results of every candidate    |
| GET    | /v1/human-eval/{kind}/{target}                | -          | one candidate's aggregated results       |

Maintainers are the hub's admins (``quantgrid hub user add NAME --admin``). Grading itself is
a web form (``/human-eval``, see web.py); nobody grades their own adapter. Aggregates (``summary``): per rubric dimension the
mean score of the candidate and of the base over every grade, and the candidate's win rate
(a win counts 1, a tie 1/2, over the grades); for the risk flag, how often each was flagged;
"overall" compares the sum of the four 1-5 scores.
"""

from __future__ import annotations

import logging
import random
import secrets
import typing
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from quantgrid.errors import ConfigError, NotFound, PermissionDenied
from quantgrid.hub import schemas as S
from quantgrid.hub.server.auth import Principal
from quantgrid.hub.server.db import Database
from quantgrid.hub.server.deps import AdminUser, OptionalUser, get_db
from quantgrid.hub.server.models import Adapter, HumanEvalGrade, HumanEvalItem, Release

log = logging.getLogger(__name__)

SCORED = ("clarity", "correctness", "number_accuracy", "strategy_quality")
FLAG = "risk_flag"
LABELS = {"clarity": "Clarity", "correctness": "Correctness", "number_accuracy": "Number accuracy",
          "strategy_quality": "Strategy quality", FLAG: "Risk flagged", "overall": "Overall (sum of the four)"}
# Public sets only: graders see the questions, so the hidden benchmark must never be one.
PUBLIC_SETS = typing.get_args(S.HumanEvalBenchmark)
KINDS = ("adapter", "release")
JOB_KIND = "human_eval"
JOB_PRIORITY = 200  # after validations and releases (100): grading can wait, contributors' verdicts not
DEFAULT_SAMPLE = S.HUMAN_EVAL_DEFAULT_SAMPLE
MAX_SAMPLE = S.HUMAN_EVAL_MAX_SAMPLE

Kind = Literal["adapter", "release"]


class Grade(BaseModel):
    """One answer's grades."""

    clarity: int = Field(ge=1, le=5)
    correctness: int = Field(ge=1, le=5)
    number_accuracy: int = Field(ge=1, le=5)
    strategy_quality: int = Field(ge=1, le=5)
    risk_flag: bool


class PairIn(BaseModel):
    question_id: str = Field(min_length=1, max_length=64)
    question: str = Field(min_length=1, max_length=20_000)
    context: str | None = Field(None, max_length=20_000)
    base_answer: str = Field(max_length=20_000)
    candidate_answer: str = Field(max_length=20_000)


class PairsIn(BaseModel):
    benchmark: str = Field("finance-dev", description="the public set the questions come from")
    pairs: list[PairIn] = Field(min_length=1, max_length=MAX_SAMPLE)


class GenerateIn(BaseModel):
    benchmark: str = "finance-dev"
    n: int = Field(DEFAULT_SAMPLE, ge=1, le=MAX_SAMPLE)
    seed: int = 0
    max_new_tokens: int = Field(128, ge=1, le=1024)


# ------------------------------------------------------------------ candidates and pairs


def check_target(db: Database, kind: str, target: str) -> None:
    """NotFound unless ``target`` is an accepted adapter's id or a published release's version."""
    with db.read() as s:
        if kind == "adapter":
            ok = target.isdigit() and s.get(Adapter, int(target)) is not None
        elif kind == "release":
            ok = s.scalar(select(Release.id).where(Release.version == target, Release.status == "published")) is not None
        else:
            raise ConfigError(f"unknown candidate kind {kind!r}", hint=f"use one of: {', '.join(KINDS)}")
    if not ok:
        raise NotFound(f"no {'accepted adapter' if kind == 'adapter' else 'published release'} {target!r}",
                       hint="human evaluation grades accepted adapters and published releases")


def _check_benchmark(benchmark: str) -> None:
    if benchmark not in PUBLIC_SETS:
        raise ConfigError(f"{benchmark!r} is not a public benchmark",
                          hint=f"human evaluation shows its questions to graders; use one of: {', '.join(PUBLIC_SETS)}")


def sample_questions(benchmark: str, n: int, seed: int = 0) -> list[tuple[str, Any]]:
    """``n`` (question id, Example) of the public ``benchmark``, a reproducible sample."""
    from quantgrid.data import load_examples

    _check_benchmark(benchmark)
    examples = load_examples(f"builtin:{benchmark}")
    idx = sorted(random.Random(seed).sample(range(len(examples)), min(n, len(examples))))
    return [(str(examples[i].meta.get("id") or f"{benchmark}-{i}"), examples[i]) for i in idx]


def add_pairs(db: Database, kind: str, target: str, benchmark: str, pairs: Sequence[PairIn],
              rng: Callable[[], bool] | None = None) -> int:
    """Store answer pairs (a question already stored for this candidate is kept as it was);
    returns how many were new. Each pair's side is drawn with ``secrets`` unless ``rng`` is given."""
    _check_benchmark(benchmark)
    coin = rng or (lambda: secrets.randbits(1) == 1)
    added = 0
    for p in pairs:
        try:
            with db.write() as s:
                s.add(HumanEvalItem(target_kind=kind, target=target, benchmark=benchmark, question_id=p.question_id,
                                    question=p.question, context=p.context, base_answer=p.base_answer,
                                    candidate_answer=p.candidate_answer, candidate_first=coin()))
            added += 1
        except IntegrityError:
            continue
    return added


# ------------------------------------------------------------------ grading (blind)


def blind_view(item: HumanEvalItem) -> dict[str, Any]:
    """What a grader sees: the question and two answers labelled A and B, nothing else."""
    first, second = ((item.candidate_answer, item.base_answer) if item.candidate_first
                     else (item.base_answer, item.candidate_answer))
    return {"id": item.id, "question": item.question, "context": item.context, "benchmark": item.benchmark,
            "answers": [("A", first), ("B", second)]}


def sets_for(db: Database, user: Principal) -> list[dict[str, Any]]:
    """Every candidate with answer pairs: how many pairs, and how many of them this user graded."""
    with db.read() as s:
        items = s.execute(select(HumanEvalItem.target_kind, HumanEvalItem.target, func.count())
                          .group_by(HumanEvalItem.target_kind, HumanEvalItem.target)).all()
        mine = dict(((k, t), n) for k, t, n in s.execute(
            select(HumanEvalItem.target_kind, HumanEvalItem.target, func.count())
            .join(HumanEvalGrade, HumanEvalGrade.item_id == HumanEvalItem.id)
            .where(HumanEvalGrade.user_id == user.id)
            .group_by(HumanEvalItem.target_kind, HumanEvalItem.target)).all())
    return [{"kind": k, "target": t, "pairs": n, "mine": mine.get((k, t), 0)}
            for k, t, n in sorted(items, key=lambda r: (r[0], r[1]))]


def next_item(db: Database, user: Principal, kind: str, target: str) -> tuple[HumanEvalItem | None, int, int]:
    """The first item of the candidate ``user`` has not graded yet, with (graded, total)."""
    with db.read() as s:
        graded = select(HumanEvalGrade.item_id).where(HumanEvalGrade.user_id == user.id)
        where = (HumanEvalItem.target_kind == kind, HumanEvalItem.target == target)
        total = s.scalar(select(func.count()).select_from(HumanEvalItem).where(*where)) or 0
        done = s.scalar(select(func.count()).select_from(HumanEvalItem)
                        .where(*where, HumanEvalItem.id.in_(graded))) or 0
        item = s.scalars(select(HumanEvalItem).where(*where, HumanEvalItem.id.not_in(graded))
                         .order_by(HumanEvalItem.id).limit(1)).first()
    return item, done, total


def own_candidate(db: Database, user: Principal, kind: str, target: str) -> bool:
    """True if ``target`` is ``user``'s own adapter: its author knows its style, so their grades
    would not be blind."""
    with db.read() as s:
        return _is_own(s, user, kind, target)


def _is_own(session, user: Principal, kind: str, target: str) -> bool:
    return kind == "adapter" and target.isdigit() and \
        session.scalar(select(Adapter.user_id).where(Adapter.id == int(target))) == user.id


def record_grade(db: Database, user: Principal, item_id: int, a: Grade, b: Grade) -> HumanEvalItem:
    """Store (or replace) ``user``'s grades of item ``item_id``, A and B mapped back to
    candidate and base with the order only the server knows. Nobody grades their own adapter."""
    with db.write() as s:
        item = s.get(HumanEvalItem, item_id)
        if item is None:
            raise NotFound(f"no human-evaluation item {item_id}")
        if _is_own(s, user, item.target_kind, item.target):
            raise PermissionDenied("you cannot grade your own adapter", hint="another maintainer can")
        cand, base = (a, b) if item.candidate_first else (b, a)
        scores = {"candidate": cand.model_dump(), "base": base.model_dump()}
        row = s.get(HumanEvalGrade, (item_id, user.id))
        if row is None:
            s.add(HumanEvalGrade(item_id=item_id, user_id=user.id, scores=scores))
        else:
            row.scores = scores
        s.expunge(item)
    return item


# ------------------------------------------------------------------ aggregates


def aggregate(grades: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Means and the candidate's win rate per rubric dimension over ``grades``
    (each ``{"candidate": {...}, "base": {...}}``); see the module docstring."""
    n = len(grades)
    out: dict[str, Any] = {"grades": n, "dimensions": {}}
    if not n:
        return out

    def dim(cand: list[float], base: list[float]) -> dict[str, float]:
        wins = sum(1.0 if c > b else 0.5 if c == b else 0.0 for c, b in zip(cand, base, strict=True))
        return {"candidate": sum(cand) / n, "base": sum(base) / n, "win_rate": wins / n}

    for key in SCORED:
        out["dimensions"][key] = dim([g["candidate"][key] for g in grades], [g["base"][key] for g in grades])
    out["dimensions"][FLAG] = {"candidate": sum(bool(g["candidate"][FLAG]) for g in grades) / n,
                               "base": sum(bool(g["base"][FLAG]) for g in grades) / n}
    out["dimensions"]["overall"] = dim([sum(g["candidate"][k] for k in SCORED) for g in grades],
                                       [sum(g["base"][k] for k in SCORED) for g in grades])
    out["win_rate"] = out["dimensions"]["overall"]["win_rate"]
    return out


def summaries(db: Database, kind: str, targets: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """target -> ``aggregate`` of its grades (with its number of pairs), for every graded candidate of ``kind``."""
    with db.read() as s:
        q = (select(HumanEvalItem.target, HumanEvalGrade.scores)
             .join(HumanEvalGrade, HumanEvalGrade.item_id == HumanEvalItem.id)
             .where(HumanEvalItem.target_kind == kind))
        if targets is not None:
            q = q.where(HumanEvalItem.target.in_(list(targets)))
        rows = s.execute(q).all()
        counts = dict(s.execute(select(HumanEvalItem.target, func.count()).where(HumanEvalItem.target_kind == kind)
                                .group_by(HumanEvalItem.target)).all())
    by: dict[str, list[dict]] = {}
    for target, scores in rows:
        by.setdefault(target, []).append(scores)
    return {t: {**aggregate(g), "pairs": counts.get(t, 0)} for t, g in by.items()}


def rounded(summary: dict[str, Any], decimals: int = 2) -> dict[str, Any]:
    dims = {k: {m: round(v, decimals) for m, v in d.items()} for k, d in summary.get("dimensions", {}).items()}
    out = {**summary, "dimensions": dims}
    if "win_rate" in summary:
        out["win_rate"] = round(summary["win_rate"], decimals)
    return out


# ------------------------------------------------------------------ generation (worker job)


def generate_pairs(recipe, adapter_dir, *, benchmark: str = "finance-dev", n: int = DEFAULT_SAMPLE, seed: int = 0,
                   max_new_tokens: int = 128) -> list[PairIn]:
    """Greedy answers of the recipe's base and of the candidate (the PEFT directory
    ``adapter_dir``) on a sample of a public benchmark, with the recipe's prompt."""
    from quantgrid.eval.generate import generate_answers
    from quantgrid.eval.loss import load_for_eval
    from quantgrid.ml.models import load_adapter

    questions = sample_questions(benchmark, n, seed)
    model, tokenizer, _ = load_for_eval(recipe.base_model, [], check_base=False)
    model = load_adapter(model, adapter_dir, adapter_name="candidate")
    examples = [ex for _, ex in questions]
    kw = dict(template=recipe.prompt_template, system_prompt=recipe.system_prompt, max_new_tokens=max_new_tokens,
              max_prompt_tokens=recipe.training.max_seq_length)
    base = generate_answers(model, tokenizer, examples, adapter=None, **kw)
    cand = generate_answers(model, tokenizer, examples, adapter="candidate", **kw)
    return [PairIn(question_id=qid, question=ex.prompt, context=ex.context, base_answer=b, candidate_answer=c)
            for (qid, ex), b, c in zip(questions, base, cand, strict=True)]


def candidate_dir(ctx, kind: str, target: str, tmp):
    """The candidate's PEFT directory: the release's own, or the accepted adapter's weights
    (read from its zip) next to the hub's adapter config, written under ``tmp``."""
    from pathlib import Path as FsPath

    from quantgrid.hub.server.releases import published, release_dir

    if kind == "release":
        # Through the release's row: its archive in object storage, or a moved storage_dir.
        found = release_dir(ctx.settings, published(ctx.db, target))
        if found is None:
            raise NotFound(f"the files of release {target} are gone", hint="hub admin: restore the release directory")
        return found
    import zipfile

    from quantgrid.adapter import WEIGHTS
    from quantgrid.hub.validate import _write_adapter

    with ctx.db.read() as s:
        sha = s.scalar(select(Adapter.blob_sha256).where(Adapter.id == int(target)))
    with ctx.blobs.open(sha) as f, zipfile.ZipFile(f) as zf:
        name = next(n for n in zf.namelist() if n.rsplit("/", 1)[-1] == WEIGHTS)
        weights = zf.read(name)
    return _write_adapter(FsPath(tmp) / "candidate", weights, ctx.settings.recipe)


def generation_job(kind: str, target: str, body: GenerateIn) -> tuple[dict[str, Any], str]:
    """The worker job's payload and its dedupe key: one job per candidate, benchmark, sample and seed."""
    return ({"kind": kind, "target": target, **body.model_dump()},
            f"{JOB_KIND}:{kind}:{target}:{body.benchmark}:{body.n}:{body.seed}")


def queue_release(session, version: str, n: int) -> None:
    """Queue answer pairs of the release being published, inside its transaction, so maintainers
    find it ready to grade (``n`` = 0: none; the hub setting ``human_eval_sample``)."""
    from quantgrid.hub.server.jobs import enqueue
    from quantgrid.hub.server.models import Job

    if n <= 0:
        return
    payload, key = generation_job("release", version, GenerateIn(n=n))
    if session.scalar(select(Job.id).where(Job.dedupe_key == key)) is None:
        enqueue(session, JOB_KIND, payload, dedupe_key=key, priority=JOB_PRIORITY)


def handle_human_eval_job(ctx) -> dict[str, Any]:
    """Generate and store the answer pairs of ``payload`` (kind, target, benchmark, n, seed)."""
    import tempfile

    p = ctx.payload
    kind, target, benchmark = p["kind"], str(p["target"]), p.get("benchmark", "finance-dev")
    check_target(ctx.db, kind, target)
    with tempfile.TemporaryDirectory(prefix="qg-human-eval-") as tmp:
        pairs = generate_pairs(ctx.settings.recipe, candidate_dir(ctx, kind, target, tmp), benchmark=benchmark,
                               n=int(p.get("n", DEFAULT_SAMPLE)), seed=int(p.get("seed", 0)),
                               max_new_tokens=int(p.get("max_new_tokens", 128)))
    ctx.heartbeat()
    added = add_pairs(ctx.db, kind, target, benchmark, pairs)
    log.info("human evaluation of %s %s: %d new answer pairs", kind, target, added)
    return {"kind": kind, "target": target, "pairs": len(pairs), "added": added}


# ------------------------------------------------------------------ API

router = APIRouter(prefix="/v1/human-eval", tags=["human evaluation"])
DB = Annotated[Database, Depends(get_db)]
Target = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


@router.post("/{kind}/{target}/pairs", status_code=201)
def post_pairs(kind: Kind, target: Target, body: PairsIn, db: DB, _user: AdminUser) -> dict[str, Any]:
    """Store answer pairs made elsewhere (e.g. by a maintainer's own run of both models)."""
    check_target(db, kind, target)
    return {"added": add_pairs(db, kind, target, body.benchmark, body.pairs)}


@router.post("/{kind}/{target}/generate", status_code=202)
def post_generate(kind: Kind, target: Target, body: GenerateIn, db: DB, _user: AdminUser) -> dict[str, Any]:
    """Queue a worker job that answers a sample of the public benchmark with the base and the candidate."""
    from quantgrid.hub.server.jobs import enqueue_once

    check_target(db, kind, target)
    _check_benchmark(body.benchmark)
    payload, key = generation_job(kind, target, body)
    return {"job_id": enqueue_once(db, JOB_KIND, payload, dedupe_key=key, priority=JOB_PRIORITY)}


@router.get("")
def get_all(db: DB, _user: OptionalUser) -> dict[str, Any]:
    """Aggregated human-evaluation results of every graded adapter and release."""
    return {kind: {t: rounded(v) for t, v in summaries(db, kind).items()} for kind in KINDS}


@router.get("/{kind}/{target}")
def get_one(kind: Kind, target: Target, db: DB, _user: OptionalUser) -> dict[str, Any]:
    """One candidate's aggregated results (no answers, no per-item grades)."""
    got = summaries(db, kind, [target]).get(target)
    return rounded(got) if got else {"grades": 0, "dimensions": {}}


# ------------------------------------------------------------------ the totals in the release API


def with_grades(db: Database, items: Sequence[S.ReleaseOut]) -> list[S.ReleaseOut]:
    """``items`` with ``human_eval`` set, and a human-evaluation section added to the notes,
    for every release that has grades (one query for all). Grades arrive after a release is
    published, so its stored notes cannot hold them; they are added where the notes are read."""
    got = summaries(db, "release", [r.version for r in items])
    return [r.model_copy(update={"human_eval": rounded(got[r.version]),
                                 "notes": (r.notes or "").rstrip("\n") + "\n\n" + notes_markdown(got[r.version])})
            if r.version in got else r for r in items]


def notes_markdown(summary: dict[str, Any]) -> str:
    """The release notes' section for a candidate's grading totals (``summaries``' value)."""
    lines = ["## Human evaluation", "",
             f"{summary['grades']} blind grade(s) of {summary['pairs']} answer pair(s) on a public benchmark, "
             "against the base model.", "",
             "| rubric | this release (mean) | base (mean) | release win rate |", "|---|---|---|---|"]
    for key, d in summary["dimensions"].items():
        if key == FLAG:
            lines.append(f"| {LABELS[key]} | {d['candidate']:.0%} flagged | {d['base']:.0%} flagged | – |")
        else:
            lines.append(f"| {LABELS[key]} | {d['candidate']:.2f} | {d['base']:.2f} | {d['win_rate']:.0%} |")
    return "\n".join(lines) + "\n"
