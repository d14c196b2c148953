"""Models and adapters named by Hugging Face Hub id, found in the local Hugging Face cache.

``quantgrid train --base-model`` and ``quantgrid serve --adapter`` accept, besides a local
directory, ``hf://OWNER/NAME`` (optionally ``@REVISION``) or a bare ``OWNER/NAME`` that
is not a local path. The id is looked up with ``huggingface_hub.snapshot_download(...,
local_files_only=True)``: the cache layout, ``HF_HOME`` / ``HF_HUB_CACHE`` and revisions
are huggingface_hub's own, and nothing is ever downloaded (download once with
``huggingface-cli download OWNER/NAME`` where there is a network).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from quantgrid.errors import ConfigError

PREFIX = "hf://"


@dataclass(frozen=True)
class HubRef:
    repo_id: str
    revision: str | None = None


def parse_ref(ref: str) -> HubRef | None:
    """The Hub id in ``ref``, or None when ``ref`` names a local path (or is not an id at all)."""
    explicit = ref.startswith(PREFIX)
    body = ref[len(PREFIX):] if explicit else ref
    if not explicit and (Path(ref).expanduser().exists() or ref.startswith((".", "/", "~"))):
        return None
    repo, _, revision = body.partition("@")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError as e:
        if explicit:
            raise ConfigError(f"{ref!r} is not a Hugging Face repo id: {e}",
                              hint="write hf://OWNER/NAME or hf://OWNER/NAME@REVISION") from None
        return None
    if not explicit and "/" not in repo:
        return None  # a bare word is a local name, not a Hub id
    return HubRef(repo, revision or None)


def cached_snapshot(ref: HubRef) -> Path:
    """The cached snapshot directory of ``ref``; a clear error when it is not in the cache."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(ref.repo_id, revision=ref.revision, local_files_only=True))
    except LocalEntryNotFoundError:
        from huggingface_hub import constants

        where = f"{ref.repo_id}@{ref.revision}" if ref.revision else ref.repo_id
        raise ConfigError(f"{where} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE})",
                          hint=f"download it once where there is a network: huggingface-cli download {where}; "
                               "or set HF_HUB_CACHE to the cache that holds it") from None


def resolve_local(ref: str) -> str:
    """``ref`` as a local directory: Hub ids become their cached snapshot; paths are returned as given.

    A bare ``OWNER/NAME`` that is not cached is returned as given too (the caller's own
    "not found" message names it); ``hf://`` promises a Hub id, so there it is an error.
    """
    hub = parse_ref(ref)
    if hub is None:
        return ref
    if not ref.startswith(PREFIX):
        try:
            return str(cached_snapshot(hub))
        except ConfigError:
            return ref
    return str(cached_snapshot(hub))


def hub_name(ref: str) -> str | None:
    """The repo id ``ref`` names (without ``hf://`` and revision), or None for a local path."""
    hub = parse_ref(ref)
    return hub.repo_id if hub else None
