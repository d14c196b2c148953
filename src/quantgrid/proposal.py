"""``quantgrid propose``: the adapter proposal LocoLLM asks for before any training.

A proposal names the domain and shows 3-5 real queries with the *base* model's answers:
the evidence that the base falls short and an adapter is worth training. quantgrid runs
the base (greedy decoding, the recipe's prompt) and writes the markdown; the contributor
adds what a good answer would say.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from quantgrid.errors import DataError

MIN_QUERIES, MAX_QUERIES = 3, 5


@dataclass(frozen=True)
class Proposal:
    domain: str
    base_model: str
    queries: list[str]
    answers: list[str]

    def markdown(self) -> str:
        date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
        lines = [f"# Adapter proposal: {self.domain}", "",
                 f"Base model `{self.base_model}`, greedy decoding with the standard recipe's prompt; written by "
                 f"`quantgrid propose` on {date}.", "",
                 "## Why this domain", "", "_Who asks these questions, and why the base's answers are not good "
                 "enough. Replace this line._", "",
                 "## The base model's answers", ""]
        for i, (q, a) in enumerate(zip(self.queries, self.answers, strict=True), 1):
            lines += [f"### Query {i}", "", f"**Question:** {q}", "", "**Base model:**", "",
                      *[f"> {line}" for line in (a.strip() or "(empty answer)").splitlines()], "",
                      "**A good answer would:** _fill in_", ""]
        lines += ["## Data plan", "", "_Where the training data comes from (sources, licence, size), and how the "
                  "held-out benchmark is kept separate. Replace this line._", ""]
        return "\n".join(lines)


def read_queries(path: Path) -> list[str]:
    """3-5 queries: one per line of a text file (``#`` comments and blank lines skipped), or JSONL/JSON
    records with a ``question`` / ``prompt`` / ``instruction`` field."""
    if not path.is_file():
        raise DataError(f"queries file not found: {path}", hint="write 3-5 questions, one per line")
    text = path.read_text(encoding="utf-8")
    queries: list[str] = []
    if path.suffix.lower() in (".jsonl", ".json"):
        from quantgrid.data import load_examples

        queries = [ex.prompt for ex in load_examples(path)]
    else:
        queries = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not MIN_QUERIES <= len(queries) <= MAX_QUERIES:
        raise DataError(f"{path} holds {len(queries)} queries; a proposal shows {MIN_QUERIES} to {MAX_QUERIES}",
                        hint="pick the 3-5 questions that best show where the base falls short")
    return queries


def propose(queries: list[str], *, domain: str, base_model: str, max_new_tokens: int = 128,
            device: str | None = None) -> Proposal:
    """Run the base on ``queries`` and return the proposal."""
    from quantgrid.data.types import Example
    from quantgrid.eval.generate import generate_answers
    from quantgrid.eval.loss import load_for_eval
    from quantgrid.ml.models import base_info
    from quantgrid.recipe import Recipe

    recipe = Recipe()
    model, tokenizer, _ = load_for_eval(base_model, [], device=device, load_in_4bit=None)
    examples = [Example(q, "") for q in queries]
    answers = generate_answers(model, tokenizer, examples, template=recipe.prompt_template,
                               system_prompt=recipe.system_prompt, adapter=None, max_new_tokens=max_new_tokens,
                               batch_size=len(examples), max_prompt_tokens=max(16, recipe.training.max_seq_length
                                                                               - max_new_tokens))
    return Proposal(domain=domain, base_model=base_info(base_model).name, queries=queries, answers=list(answers))


def proposal_json(p: Proposal) -> str:
    return json.dumps({"domain": p.domain, "base_model": p.base_model,
                       "queries": [{"question": q, "base_answer": a} for q, a in zip(p.queries, p.answers,
                                                                                       strict=True)]}, indent=2)
