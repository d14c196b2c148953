"""The one record type every dataset schema is turned into."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Example:
    """A training or benchmark item.

    ``prompt`` is the user's question/instruction (without any template), ``completion``
    the answer the model should produce. ``context`` is optional grounding text
    (filings, a table). ``meta`` carries schema extras: rationale, tickers, citations,
    risk_note, patterns, topic, source file and line.
    """

    prompt: str
    completion: str
    context: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"question": self.prompt, "answer": self.completion}
        if self.context:
            d["context"] = self.context
        d.update({k: v for k, v in self.meta.items() if k not in ("source", "line")})
        return d
