"""Request/response models shared by the hub server and its client (no torch, no server deps)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SubmissionStatus = Literal["queued", "validating", "accepted", "rejected"]
# The sets human evaluation may sample: public ones only, since graders read the questions.
HumanEvalBenchmark = Literal["finance-dev", "alpha-bench"]
HUMAN_EVAL_MAX_SAMPLE = 200
HUMAN_EVAL_DEFAULT_SAMPLE = 8

# Headers of the upload endpoint (POST /v1/submissions, raw zip body).
SHA256_HEADER = "X-Content-SHA256"
FILENAME_HEADER = "X-Filename"
IDEMPOTENCY_HEADER = "Idempotency-Key"


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable error kind, e.g. unauthorized, not_found, rate_limited")
    message: str
    hint: str | None = Field(None, description="what to do next")


class ErrorBody(BaseModel):
    """The one shape of every error response (QuantGridError.to_dict())."""

    error: ErrorDetail


class Health(_Out):
    status: Literal["ok"] = "ok"
    version: str
    recipe_hash: str
    max_upload_bytes: int
    daily_submission_limit: int
    queue: dict[str, int] = Field(default_factory=dict, description="job counts by status")


class RecipeOut(_Out):
    recipe: dict[str, Any] = Field(description="quantgrid.recipe.Recipe as JSON")
    hash: str

    def to_recipe(self):
        from quantgrid.recipe import Recipe

        recipe = Recipe.from_dict(self.recipe, source="hub recipe")
        if recipe.hash() != self.hash:
            from quantgrid.errors import HubError

            raise HubError(f"the hub's recipe hash {self.hash} does not match its content ({recipe.hash()})",
                           hint="the hub and this client run different quantgrid versions; upgrade both")
        return recipe


class WhoAmI(_Out):
    name: str
    is_admin: bool


class SubmissionOut(_Out):
    id: int
    owner: str
    filename: str
    sha256: str
    size_bytes: int
    status: SubmissionStatus
    created_at: dt.datetime
    updated_at: dt.datetime
    score: float | None = Field(None, description="rounded loss improvement over the base, nats/token")
    report: dict[str, Any] | None = Field(
        None, description="validation report (stage, check, numbers, diagnoses); owner and admins only")
    duplicate: bool = Field(False, description="true when this push matched an existing submission")


class SubmissionList(_Out):
    items: list[SubmissionOut]


class AdapterOut(_Out):
    id: int
    owner: str
    score: float | None
    impact: float | None
    upvotes: int
    accepted_at: dt.datetime


class AdapterList(_Out):
    items: list[AdapterOut]


class LeaderboardEntry(_Out):
    rank: int
    contributor: str
    accepted: int
    impact: float
    upvotes: int
    submissions: int


class Leaderboard(_Out):
    formula: str
    entries: list[LeaderboardEntry]


class VoteOut(_Out):
    adapter_id: int
    upvotes: int


class ReleaseOut(_Out):
    version: str
    status: str
    is_current: bool
    created_at: dt.datetime
    published_at: dt.datetime | None = None
    metrics: dict[str, Any] | None = None
    notes: str | None = None
    human_eval: dict[str, Any] | None = Field(
        None, description="the release's blind human-evaluation totals (as GET /v1/human-eval/release/{version}); "
        "null until a maintainer has graded one of its answer pairs")


class ReleaseList(_Out):
    current: str | None = Field(None, description="the version in service")
    items: list[ReleaseOut]
