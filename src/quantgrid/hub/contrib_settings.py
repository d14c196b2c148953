"""The settings of the contributor's commands (``package``, ``push``, ``login``, ``whoami``,
``status``, ``leaderboard``, ``upvote``, ``registry``, ``propose``): one model per command,
whose fields are its flags (see :mod:`quantgrid.settings`). The paths and ids a command
works on are its positional arguments. Imports only pydantic."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class _Contrib(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Settings several commands share, each declared once (type, default, help). The client
# resolves a missing hub URL.
Hub = Annotated[str | None, Field(None, description="hub URL (default: $QUANTGRID_HUB, else the one you logged in "
                                  "to, else http://127.0.0.1:8080)")]
AsJson = Annotated[bool, Field(False, description="print machine-readable JSON instead of a table",
                               json_schema_extra={"flag": "--json"})]


class HubTarget(_Contrib):
    """Which hub a network command talks to."""

    hub: Hub


class PackageSettings(_Contrib):
    author: str = Field(..., description="your name, credited on the leaderboard")
    dataset_desc: str = Field(..., description="one sentence on the training data (never the data itself)")
    out: Path = Field(Path("."), description="directory to write the zip into")
    name: str | None = Field(None, description="registry name (default: the adapter directory's name)")
    improves: str | None = Field(None, description="registry name of the adapter this one is a new version of (it "
                                 "becomes one only if it beats the current version on the hub's hidden benchmark)")


class LoginSettings(_Contrib):
    hub: Hub
    token: str | None = Field(None, description="API token from the hub admin (default: prompt for it, hidden)")


class PushSettings(_Contrib):
    hub: Hub
    idempotency_key: str | None = Field(None, description="reuse a key to retry a push safely "
                                        "(default: a new random key)")
    as_json: AsJson


class StatusSettings(_Contrib):
    hub: Hub
    as_json: AsJson


class LeaderboardSettings(_Contrib):
    hub: Hub
    limit: int = Field(20, ge=1, le=1000, description="how many contributors")
    as_json: AsJson


class RegistrySettings(_Contrib):
    hub: Hub
    out: Path = Field(Path("registry.yaml"), description="registry.yaml to write", json_schema_extra={"short": "-o"})


class ProposeSettings(_Contrib):
    domain: str = Field(..., description="the adapter's domain, e.g. 'SEC filings'")
    base_model: str | None = Field(None, description="base model id or directory (default: the standard recipe's "
                                   "base)")
    out: Path = Field(Path("PROPOSAL.md"), description="proposal markdown to write", json_schema_extra={"short": "-o"})
    max_new_tokens: int = Field(128, ge=1, le=4096, description="longest base answer, in tokens")
    device: str | None = Field(None, description="cpu, cuda, ... (default: cuda when available)")


class ReleasesSettings(_Contrib):
    hub: Hub
    download: str | None = Field(None, description="also download this release (a version or 'latest') as a zip")
    out: Path | None = Field(None, description="where --download saves the zip (default: "
                             "quantgrid-release-VERSION.zip)")
    as_json: AsJson
