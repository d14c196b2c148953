"""Ratings of answers, and (opt-in) a local file of rated exchanges to train on.

Every generation response carries its id (``X-Request-Id``; OpenAI bodies also have it as
``id``). The server remembers the last ``MAX_REMEMBERED`` exchanges in memory only;
``POST /v1/feedback {"id", "rating": "up"|"down"}`` counts the rating per A/B arm in
``/metrics`` and, when ``--feedback-store FILE`` is given, appends the rated exchange
(prompt, answer, rating) to that local JSONL file. Nothing is sent anywhere.
``quantgrid data from-feedback FILE`` turns the well-rated exchanges into a training set.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from quantgrid.errors import DataError, NotFound

MAX_REMEMBERED = 10_000
REQUEST_ID_HEADER = "X-Request-Id"


@dataclass
class Exchange:
    id: str
    created: float
    model: str
    backend: str
    adapter: str | None
    arm: str | None
    messages: list[dict[str, str]] | None
    prompt: str | None
    answers: list[str] = field(default_factory=list)


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: StrictStr = Field(description="the response id (X-Request-Id, or the OpenAI body's id)")
    rating: Literal["up", "down"] = Field(description="thumbs up or down")
    choice: int = Field(0, ge=0, description="which choice of an n > 1 response")
    comment: StrictStr | None = Field(None, max_length=2000)


class FeedbackReceipt(BaseModel):
    id: str
    rating: str
    arm: str | None
    stored: bool


class FeedbackBook:
    """Recent exchanges by id, and the opt-in store of rated ones."""

    def __init__(self, store: str | Path | None = None):
        self.store = Path(store).expanduser() if store else None
        self._recent: OrderedDict[str, Exchange] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, ex: Exchange) -> None:
        with self._lock:
            self._recent[ex.id] = ex
            while len(self._recent) > MAX_REMEMBERED:
                self._recent.popitem(last=False)

    def rate(self, req: FeedbackRequest) -> tuple[Exchange, bool]:
        with self._lock:
            ex = self._recent.get(req.id)
        if ex is None:
            raise NotFound(f"no recent response has id {req.id!r}",
                           hint=f"rate a response by its id within the last {MAX_REMEMBERED} responses")
        if req.choice >= len(ex.answers):
            raise NotFound(f"response {req.id!r} has no choice {req.choice}", hint="choices count from 0")
        if self.store is None:
            return ex, False
        line = json.dumps({"rated_at": time.time(), "rating": req.rating, "choice": req.choice,
                           "comment": req.comment, "exchange": asdict(ex)}, ensure_ascii=False) + "\n"
        self.store.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:  # one whole line per write; a crash leaves at most a partial last line, skipped on read
            fd = os.open(self.store, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        return ex, True


def read_ratings(path: str | Path) -> tuple[dict[tuple[str, int], dict[str, Any]], int]:
    """The latest rating of every (response id, choice) in a feedback file, and the number
    of unreadable lines skipped (a partial last line after a crash)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"no feedback file at {p}", hint="start the server with --feedback-store FILE and rate answers")
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    bad = 0
    with p.open(encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
                key = (rec["exchange"]["id"], int(rec.get("choice", 0)))
            except (ValueError, KeyError, TypeError):
                bad += 1
                continue
            latest[key] = rec
    return latest, bad


def training_records(path: str | Path, rating: str = "up") -> tuple[list[dict[str, Any]], int]:
    """Training records (our ``messages`` format for chat, ``instruction``/``completion`` for
    raw prompts) of the exchanges whose latest rating is ``rating``, and the lines skipped."""
    latest, bad = read_ratings(path)
    out = []
    for (_, choice), rec in latest.items():
        if rec.get("rating") != rating:
            continue
        ex = rec["exchange"]
        answer = ex["answers"][choice]
        if not answer.strip():
            continue
        if ex.get("messages"):
            out.append({"messages": [*ex["messages"], {"role": "assistant", "content": answer}]})
        elif ex.get("prompt"):
            out.append({"instruction": ex["prompt"], "completion": answer})
    return out, bad


def write_training_set(store: str | Path, out: str | Path, rating: str = "up") -> tuple[int, int]:
    """Write the exchanges rated ``rating`` as JSONL (atomically); (records written, lines skipped)."""
    from quantgrid.errors import ConfigError
    from quantgrid.utils import atomic_write_text

    if rating not in ("up", "down"):
        raise ConfigError(f"--rating must be up or down, not {rating!r}", hint="use --rating up")
    if Path(out).expanduser().resolve() == Path(store).expanduser().resolve():
        raise ConfigError("--out is the feedback file itself", hint="write the training set to another file")
    records, bad = training_records(store, rating)
    atomic_write_text(Path(out).expanduser(), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return len(records), bad
