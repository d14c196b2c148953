"""The settings of each ``quantgrid data`` command: one model per command, whose fields are
its flags (see :mod:`quantgrid.settings`). The dataset paths are the commands' positional
arguments. Imports only pydantic."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, FilePath


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Settings several commands share, each declared once (type, default, help) and placed by
# each command where its help should list it.
Format = Annotated[str | None, Field(None, description="dataset schema; detected from the first record when left "
                                     "out (`quantgrid data list` shows them)", json_schema_extra={"flag": "--format"})]
Lenient = Annotated[bool, Field(False, description="skip bad records (and list them) instead of stopping at the "
                                "first")]
Ngram = Annotated[int, Field(8, ge=1, description="n-gram size for near-duplicate detection")]
Threshold = Annotated[float, Field(0.5, ge=0.01, le=1.0, description="share of a benchmark item's n-grams in one "
                                   "train item that counts as a leak")]
AsJson = Annotated[bool, Field(False, description="print the report as JSON", json_schema_extra={"flag": "--json"})]


class CheckSettings(_Data):
    tokenizer: str | None = Field(None, description="tokenizer (model dir or HF id) for lengths in tokens")
    recipe: Path | None = Field(None, description="recipe YAML: its max_seq_length and prompt template")
    max_seq_length: int | None = Field(None, ge=16, description="warn about examples longer than this "
                                       "(default: the recipe's, 1024)")
    template: str | None = Field(None, description="prompt template for lengths (default: the recipe's, qa)")
    fmt: Format
    lenient: Lenient
    as_json: AsJson


class NormalizeSettings(_Data):
    out: Path | None = Field(None, description="output file (default: FILE.normalized.jsonl)",
                             json_schema_extra={"short": "-o"})
    changes: Path | None = Field(None, description="where to record every change (default: FILE.changes.jsonl)")
    kinds: str | None = Field(None, description="comma-separated placeholders to apply (default: all but NUMBER): "
                              "TIMESTAMP,DATE,CHANGE,PERCENT,AMOUNT,PRICE,VOLUME,NUMBER")
    dedup: bool = Field(True, description="drop examples that became exact duplicates")
    fmt: Format
    lenient: Lenient


class SplitSettings(_Data):
    benchmark_size: int = Field(50, ge=1, description="items to hold out as the benchmark")
    seed: int = Field(42, description="random seed: the same seed gives the same split")
    train_out: Path | None = Field(None, description="train file (default: FILE.train.jsonl)")
    bench_out: Path | None = Field(None, description="benchmark file (default: FILE.benchmark.jsonl)")
    n: Ngram
    threshold: Threshold
    fmt: Format
    lenient: Lenient


class LeakageSettings(_Data):
    n: Ngram
    threshold: Threshold
    show: int = Field(10, ge=0, description="how many overlaps to print")
    as_json: AsJson
    fmt: Format


class FinanceSettings(_Data):
    n: int = Field(1000, ge=0, description="number of computed-answer questions")
    seed: int = Field(0, description="random seed: the same seed gives the same items")
    topics: str | None = Field(None, description="comma-separated topics (default: all). See --list-topics")
    concepts: bool = Field(False, description="append the hand-written concept questions")
    out: Path | None = Field(None, description="output .jsonl (default: print to stdout)",
                             json_schema_extra={"short": "-o"})


class FromFeedbackSettings(_Data):
    out: Path = Field(..., description="training set to write (JSONL, messages format)")
    rating: Literal["up", "down"] = Field("up", description="keep exchanges whose latest rating is this")


class SampleSettings(_Data):
    fraction: float = Field(0.1, gt=0, le=1, description="share of the records to review by hand")
    seed: int = Field(0, description="the same seed draws the same sample")
    out: Path | None = Field(None, description="review file (default: FILE.review.jsonl)",
                             json_schema_extra={"short": "-o"})
    model: str | None = Field(None, description="the model that generated the set (recorded)")
    prompt_file: FilePath | None = Field(None, description="the prompt used to generate the set (recorded by name "
                                         "and sha256)")
    reviewed: FilePath | None = Field(None, description="a filled-in review file: record how many were rejected "
                                      "instead of drawing a sample")
