"""Releases: resolving ``--release`` and auto-deploying new ones from the hub.

A release is a plain PEFT adapter directory with a ``quantgrid.json`` manifest. A
*release source* answers "what is the latest release, and where are its files":

* :class:`DirReleaseSource` — a local directory of releases, one subdirectory per
  version (or a single release directory);
* :class:`HubReleaseSource` — the hub's ``GET /v1/releases/latest`` plus a download
  of the release archive (through the hub client), unpacked (allowlisted names only) into a local cache.

The :class:`Deployer` polls a source; when the version changes it registers the new
release with the engine and points the ``quantgrid`` model at it. Requests already
running keep the slot of the old release until they finish, new ones get the new
release, and nothing is dropped: the swap only changes which adapter *new* requests use.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from quantgrid import lora_files
from quantgrid.errors import ConfigError, NotFound
from quantgrid.merge.schedule import ReleaseVersion

log = logging.getLogger(__name__)

# The adapter, its records, and the tokenizer files carrying the recipe's chat template
# (quantgrid.data.chat_template.save_chat_template writes them).
RELEASE_FILES = (lora_files.CONFIG, lora_files.WEIGHTS, "quantgrid.json", "release.json",
                 "RELEASE_NOTES.md", "README.md", "chat_template.jinja", "tokenizer_config.json", "tokenizer.json",
                 "tokenizer.model", "special_tokens_map.json")


@dataclass(frozen=True)
class ReleaseRef:
    version: str
    path: Path


class ReleaseSource(Protocol):
    def latest(self) -> ReleaseRef | None: ...

    def get(self, version: str) -> ReleaseRef: ...


def _is_version(v: str) -> bool:
    # Lenient: a release directory named by hand may have a one-digit week ("2026.9").
    return ReleaseVersion.valid(v, lenient=True)


def _version_key(v: str) -> tuple[int, ...]:
    return ReleaseVersion.parse(v, lenient=True).key()


def release_version(path: Path) -> str:
    """The version a release directory's manifest gives (or the directory name)."""
    for name in ("release.json", "quantgrid.json"):
        if (path / name).is_file():
            m = json.loads((path / name).read_text())
            v = m.get("release") or m.get("version")
            if isinstance(v, dict):
                v = v.get("version")
            if v and _is_version(str(v)):
                return str(v)
    return path.name


class DirReleaseSource:
    """Releases in a local directory: ``root/<version>/`` each an adapter directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()

    def _all(self) -> list[ReleaseRef]:
        if (self.root / lora_files.CONFIG).is_file():
            return [ReleaseRef(release_version(self.root), self.root)]
        if not self.root.is_dir():
            return []
        refs = [ReleaseRef(d.name, d) for d in self.root.iterdir()
                if d.is_dir() and _is_version(d.name) and (d / lora_files.CONFIG).is_file()]
        return sorted(refs, key=lambda r: _version_key(r.version))

    def latest(self) -> ReleaseRef | None:
        refs = self._all()
        return refs[-1] if refs else None

    def get(self, version: str) -> ReleaseRef:
        for r in self._all():
            if r.version == version:
                return r
        raise NotFound(f"release {version} is not in {self.root}", hint="list the directory for the versions")


class HubReleaseSource:
    """Releases published by a quantgrid hub (through ``quantgrid.hub.client.HubClient``),
    downloaded once into ``cache_dir/<version>``."""

    def __init__(self, hub_url: str, cache_dir: str | Path, client=None):
        from quantgrid.hub.client import HubClient

        self.cache_dir = Path(cache_dir).expanduser()
        self.client = client or HubClient(hub_url)

    def latest(self) -> ReleaseRef | None:
        try:
            version = self.client.latest_release().version
        except NotFound:
            return None
        return self.get(version)

    def _cache_key(self, version: str) -> str:
        """Where a release is cached: per hub, version and build time. A version number
        alone is not unique: another hub, or the same URL after its storage was rebuilt,
        publishes its own 2026.47 for maybe another base."""
        created = next((r.created_at for r in self.client.releases().items if r.version == version), None)
        if created is None:
            raise NotFound(f"the hub has no release {version}", hint="`quantgrid releases --hub URL` lists them")
        digest = hashlib.sha256(f"{self.client.url}|{version}|{created.isoformat()}".encode()).hexdigest()[:12]
        return f"{version}-{digest}"

    def get(self, version: str) -> ReleaseRef:
        if not _is_version(version):
            raise ConfigError(f"{version!r} is not a release version", hint="use YYYY.WW, e.g. 2026.47, or 'latest'")
        target = self.cache_dir / self._cache_key(version)
        if (target / lora_files.CONFIG).is_file():
            return ReleaseRef(version, target)
        archive = self.cache_dir / f".{version}.zip"
        self.client.download_release(version, archive)  # NotFound (404) for an unknown version
        try:
            unpack_release(archive.read_bytes(), target)
        finally:
            archive.unlink(missing_ok=True)
        return ReleaseRef(version, target)


def unpack_release(data: bytes, target: Path) -> Path:
    """Write the allowlisted files of a release zip into ``target`` atomically (nothing else)."""
    from quantgrid.utils import atomic_dir

    with zipfile.ZipFile(io.BytesIO(data)) as zf, atomic_dir(target, overwrite=True) as tmp:
        names = {Path(n).name: n for n in zf.namelist() if Path(n).name in RELEASE_FILES and not n.endswith("/")}
        if lora_files.CONFIG not in names or lora_files.WEIGHTS not in names:
            raise ConfigError("the release archive holds no adapter", hint="check the hub's release build")
        for short, full in names.items():
            (tmp / short).write_bytes(zf.read(full))
    return target


def resolve_release(spec: str, hub: str | None, cache_dir: str | Path) -> tuple[ReleaseRef, ReleaseSource | None]:
    """``--release`` (a directory, 'latest' or YYYY.WW) -> the release and the source to poll."""
    p = Path(spec).expanduser()
    if p.exists():
        if not (p / lora_files.CONFIG).is_file():
            raise ConfigError(f"--release {spec}: not a release directory (no adapter_config.json)",
                              hint="pass a release directory, 'latest' or a version like 2026.47 with --hub")
        return ReleaseRef(release_version(p), p), None
    if spec != "latest" and not _is_version(spec):
        raise ConfigError(f"--release {spec!r} is neither a directory, 'latest', nor a version YYYY.WW",
                          hint="e.g. --release latest --hub https://hub.example.org")
    if not hub:
        raise ConfigError(f"--release {spec} needs --hub to look the release up",
                          hint="add --hub URL, or pass a release directory")
    source = HubReleaseSource(hub, cache_dir)
    ref = source.latest() if spec == "latest" else source.get(spec)
    if ref is None:
        raise NotFound("the hub has published no release yet", hint="serve without --release until one exists")
    return ref, source


class Deployer:
    """Polls a release source and swaps new releases in. ``deploy`` does one swap."""

    def __init__(self, engine, router, source: ReleaseSource | None, interval_s: float = 300.0):
        self.engine = engine
        self.router = router
        self.source = source
        self.interval_s = interval_s
        self.version: str | None = None
        self.deploys = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def deploy(self, ref: ReleaseRef) -> bool:
        """Register ``ref`` and make it the ``quantgrid`` model; False if already current."""
        if ref.version == self.version:
            return False
        name = f"release-{ref.version}"
        self.engine.register_adapter(name, ref.path)
        old, self.router.release, self.version = self.router.release, name, ref.version
        self.deploys += 1
        if old and old != name:
            self.engine.adapters.pop(old, None)  # running requests keep their slot until done
        log.info("deployed release %s from %s", ref.version, ref.path)
        return True

    def check_now(self) -> bool:
        if self.source is None:
            return False
        ref = self.source.latest()
        return ref is not None and self.deploy(ref)

    def start(self) -> None:
        if self.source is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="quantgrid-deployer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check_now()
            except Exception as e:  # the hub being down must not take the server down
                log.warning("release check failed: %s", e)
