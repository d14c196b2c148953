"""The hub's HTTP client and the saved credentials (no torch, no server dependencies).

    client = HubClient()                  # hub URL + token from env or `quantgrid login`
    recipe = HubClient(url).get_recipe()  # anonymous: the recipe to train with
    sub = client.push("quantgrid_submission_1732240000.zip", progress=bar.update)

Where the URL and token come from, first match wins:

* URL:   the ``url`` argument > ``QUANTGRID_HUB`` > the credentials file > http://127.0.0.1:8080
* token: the ``token`` argument > ``QUANTGRID_TOKEN`` > the credentials file (if saved for that hub)

The credentials file is ``<config dir>/credentials.json`` with mode 0600; the config dir is
``QUANTGRID_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/quantgrid`` (``%APPDATA%\\quantgrid`` on
Windows, ``~/.config/quantgrid`` otherwise).

Every non-2xx response becomes the typed exception for its status
(:func:`quantgrid.errors.error_for_status`) carrying the server's message and hint; a hub
that can't be reached raises :class:`quantgrid.errors.NetworkError`.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from quantgrid.errors import (
    AuthError,
    ConfigError,
    HubError,
    NetworkError,
    PayloadTooLarge,
    RateLimited,
    error_for_status,
)
from quantgrid.hub import schemas as S
from quantgrid.recipe import Recipe
from quantgrid.utils import atomic_write_text, sha256_file

DEFAULT_HUB = "http://127.0.0.1:8080"
CHUNK = 1 << 20


# ---- credentials ----


def config_dir() -> Path:
    if os.environ.get("QUANTGRID_CONFIG_DIR"):
        return Path(os.environ["QUANTGRID_CONFIG_DIR"]).expanduser()
    if os.environ.get("XDG_CONFIG_HOME"):
        return Path(os.environ["XDG_CONFIG_HOME"]) / "quantgrid"
    if os.name == "nt" and os.environ.get("APPDATA"):
        return Path(os.environ["APPDATA"]) / "quantgrid"
    return Path.home() / ".config" / "quantgrid"


def credentials_path() -> Path:
    return config_dir() / "credentials.json"


def load_credentials() -> dict[str, str]:
    p = credentials_path()
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ConfigError(f"credentials file {p} is unreadable", hint="run `quantgrid logout` then `quantgrid login`") from None
    return data if isinstance(data, dict) else {}


def save_credentials(hub: str, token: str) -> Path:
    """Write ``{"hub", "token"}`` readable by the owner only (0600; the temp file is 0600 too)."""
    p = credentials_path()
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write_text(p, json.dumps({"hub": normalize_url(hub), "token": token}, indent=2) + "\n", mode=0o600)
    return p


def delete_credentials() -> bool:
    p = credentials_path()
    if p.exists():
        p.unlink()
        return True
    return False


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        url = "http://" + url
    return url


def resolve_hub(url: str | None = None) -> str:
    return normalize_url(url or os.environ.get("QUANTGRID_HUB") or load_credentials().get("hub") or DEFAULT_HUB)


def resolve_token(hub: str, token: str | None = None) -> str | None:
    if token:
        return token
    if os.environ.get("QUANTGRID_TOKEN"):
        return os.environ["QUANTGRID_TOKEN"]
    creds = load_credentials()
    if creds.get("token") and normalize_url(creds.get("hub", "")) == hub:
        return creds["token"]
    return None


# ---- the client ----


class HubClient:
    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 60.0,
                 retries: int = 2, transport: httpx.BaseTransport | None = None):
        self.url = resolve_hub(url)
        self.token = resolve_token(self.url, token)
        self.retries = retries
        self._http = httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout, connect=10.0),
                                  transport=transport, headers={"User-Agent": "quantgrid-client"})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    # ---- plumbing ----
    def _headers(self, auth: bool) -> dict[str, str]:
        if not auth:
            return {}
        if not self.token:
            raise AuthError(f"not logged in to {self.url}", hint="run `quantgrid login` or set QUANTGRID_TOKEN")
        return {"Authorization": f"Bearer {self.token}"}

    def _request(self, method: str, path: str, *, auth: bool = False, retry: bool = True,
                 content_factory: Callable[[], Any] | None = None, headers: dict | None = None,
                 params: dict | None = None) -> httpx.Response:
        """Send once, retrying only when the hub could not be reached (or answered 502/503/504)."""
        hdrs = {**self._headers(auth), **(headers or {})}
        attempts = 1 + (self.retries if retry else 0)
        for attempt in range(attempts):
            try:
                content = content_factory() if content_factory else None
                resp = self._http.request(method, path, headers=hdrs, params=params, content=content)
            except httpx.TimeoutException as e:
                err: HubError = NetworkError(f"the hub at {self.url} did not answer in time ({type(e).__name__})",
                                             hint="try again later, or check the hub's status")
            except httpx.TransportError as e:
                err = NetworkError(f"cannot reach the hub at {self.url}: {e}",
                                   hint="check --hub / QUANTGRID_HUB and that the hub is running")
            else:
                if resp.status_code in (502, 503, 504) and attempt + 1 < attempts:
                    time.sleep(min(0.5 * 2.0**attempt, 8.0))
                    continue
                if resp.status_code >= 400:
                    raise self._error(resp)
                return resp
            if attempt + 1 < attempts:
                time.sleep(min(0.5 * 2.0**attempt, 8.0))
        raise err

    @staticmethod
    def _error(resp: httpx.Response) -> HubError:
        message, hint = f"hub answered HTTP {resp.status_code}", None
        try:
            body = resp.json().get("error", {})
            message, hint = body.get("message") or message, body.get("hint")
        except (ValueError, AttributeError):
            if resp.text:
                message = f"{message}: {resp.text[:200]}"
        err = error_for_status(resp.status_code, message, hint)
        if isinstance(err, RateLimited):
            try:
                err.retry_after = float(resp.headers.get("retry-after", ""))
            except ValueError:
                err.retry_after = None
        return err

    def _get(self, path: str, model, *, auth: bool = False, params: dict | None = None):
        return model.model_validate(self._request("GET", path, auth=auth, params=params).json())

    # ---- endpoints ----
    def health(self, *, auth: bool = False) -> S.Health:
        """``auth``: send the token, so the request counts against this user's rate limit
        rather than the address's (which anonymous neighbours behind the same NAT share)."""
        return self._get("/v1/health", S.Health, auth=auth)

    def get_recipe(self) -> Recipe:
        """The hub's recipe, checked against its published hash."""
        return self._get("/v1/recipe", S.RecipeOut).to_recipe()

    def whoami(self) -> S.WhoAmI:
        return self._get("/v1/me", S.WhoAmI, auth=True)

    def submission(self, submission_id: int) -> S.SubmissionOut:
        return self._get(f"/v1/submissions/{int(submission_id)}", S.SubmissionOut, auth=True)

    def submissions(self, *, all_users: bool = False, limit: int = 100) -> list[S.SubmissionOut]:
        params = {"limit": limit, **({"all": "true"} if all_users else {})}
        return self._get("/v1/submissions", S.SubmissionList, auth=True, params=params).items

    def leaderboard(self, limit: int = 100) -> S.Leaderboard:
        return self._get("/v1/leaderboard", S.Leaderboard, params={"limit": limit})

    def adapters(self, limit: int = 100) -> list[S.AdapterOut]:
        return self._get("/v1/adapters", S.AdapterList, params={"limit": limit}).items

    def upvote(self, adapter_id: int) -> S.VoteOut:
        resp = self._request("POST", f"/v1/adapters/{int(adapter_id)}/upvote", auth=True, retry=False)
        return S.VoteOut.model_validate(resp.json())

    def push(self, path: str | Path, *, idempotency_key: str | None = None, sha256: str | None = None,
             progress: Callable[[int], None] | None = None) -> S.SubmissionOut:
        """Stream a submission zip to the hub. Safe to retry: the idempotency key travels with it.

        ``progress(n)`` is called with the number of bytes sent since the last call.
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"no such file: {path}", hint="push the zip printed by `quantgrid package`")
        size = path.stat().st_size
        # The hub refuses a bad token at the headers and hangs up without reading the body; asking
        # first turns that into a clear 401 here instead of a broken pipe halfway through the upload.
        self.whoami()
        limit = self.health(auth=True).max_upload_bytes
        if size > limit:
            raise PayloadTooLarge(f"{path.name} is {size} bytes; the hub accepts at most {limit}",
                                  hint="a submission zip holds only the LoRA adapter; package it again")
        sha256 = sha256 or sha256_file(path)
        key = idempotency_key or uuid.uuid4().hex
        # Header values must be ASCII; the name is only a label, so replace anything else.
        label = path.name.encode("ascii", "replace").decode().replace("?", "_")
        headers = {S.SHA256_HEADER: sha256, S.IDEMPOTENCY_HEADER: key, S.FILENAME_HEADER: label,
                   "Content-Type": "application/zip", "Content-Length": str(size)}

        def body() -> Iterator[bytes]:
            with open(path, "rb") as f:
                while block := f.read(CHUNK):
                    yield block
                    if progress:
                        progress(len(block))

        resp = self._request("POST", "/v1/submissions", auth=True, content_factory=body, headers=headers)
        return S.SubmissionOut.model_validate(resp.json())

    # ---- releases (quantgrid.hub.server.releases) ----
    def releases(self) -> S.ReleaseList:
        return self._get("/v1/releases", S.ReleaseList)

    def latest_release(self) -> S.ReleaseOut:
        return self._get("/v1/releases/latest", S.ReleaseOut)

    def download_release(self, version: str, dest: str | Path) -> Path:
        """Save release ``version`` (``latest`` for the one in service) as a zip at ``dest``."""
        from quantgrid.utils import atomic_write_bytes

        if version == "latest":
            version = self.latest_release().version
        resp = self._request("GET", f"/v1/releases/{version}/download")
        return atomic_write_bytes(dest, resp.content)

    # ---- human evaluation (quantgrid.hub.server.human_eval) ----
    def human_eval_generate(self, kind: str, target: str | int, *, benchmark: str = "finance-dev",
                            n: int = 8) -> int:
        """Queue the job that answers ``n`` questions of ``benchmark`` with the base and the
        candidate (an accepted adapter's id or a release's version); returns the job id. Admins
        only. Asking again with the same arguments returns the same job, so a retry is safe."""
        body = json.dumps({"benchmark": benchmark, "n": n}).encode()
        resp = self._request("POST", f"/v1/human-eval/{kind}/{target}/generate", auth=True,
                             content_factory=lambda: body, headers={"Content-Type": "application/json"})
        return int(resp.json()["job_id"])

    def human_eval_results(self) -> dict[str, dict[str, Any]]:
        """``{"adapter": {id: totals}, "release": {version: totals}}`` for every graded candidate."""
        return self._request("GET", "/v1/human-eval").json()
