"""vLLM as the serving engine for quantgrid adapters and releases (torch-free).

Two pieces, both talking to vLLM only through its command line and its HTTP API, so
nothing here imports vLLM or torch (vLLM lives in its own virtualenv, see
``scripts/vllm-cpu.sh``):

* :func:`build_command` — the exact ``python -m vllm.entrypoints.openai.api_server``
  argv that serves a base with named adapters and the release (model name ``quantgrid``):
  ``--enable-lora --lora-modules --max-lora-rank --max-loras --chat-template``.
* :class:`VllmDeployer` — polls a release source (the hub) and swaps a new release into a
  running vLLM server with ``/v1/unload_lora_adapter`` + ``/v1/load_lora_adapter``,
  without restarting it. A swap that fails puts the old release back and is retried.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from quantgrid import lora_files
from quantgrid.errors import AdapterMismatchError, ConfigError, ModelError, QuantGridError
from quantgrid.serve.deploy import ReleaseRef, ReleaseSource, release_version

log = logging.getLogger(__name__)

RELEASE_NAME = "quantgrid"
# The ranks vLLM's --max-lora-rank accepts (vllm.config.lora.MaxLoRARanks in vLLM 0.32).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
VLLM_MODULE = "vllm.entrypoints.openai.api_server"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")


def vllm_rank(rank: int) -> int:
    """The smallest rank vLLM accepts for ``--max-lora-rank`` that holds ``rank``."""
    for r in VLLM_LORA_RANKS:
        if rank <= r:
            return r
    raise ConfigError(f"LoRA rank {rank} is above vLLM's maximum --max-lora-rank {VLLM_LORA_RANKS[-1]}",
                      hint=f"rebuild the release with a smaller rank (`quantgrid hub release --rank "
                           f"{VLLM_LORA_RANKS[-1]}`) or serve it with `quantgrid serve`")


def adapter_rank(path: Path) -> int:
    """The largest LoRA rank in an adapter directory's ``adapter_config.json``."""
    cfg_path = Path(path) / lora_files.CONFIG
    cfg = lora_files.read_config(path, error=ModelError)
    try:
        ranks = [int(cfg["r"]), *(int(v) for v in (cfg.get("rank_pattern") or {}).values())]
    except (ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{cfg_path} is not a LoRA adapter config ({type(e).__name__}: {e})",
                         hint="re-save the adapter with PEFT, or retrain it") from None
    if cfg.get("peft_type", "LORA") != "LORA":
        raise ModelError(f"{cfg_path}: peft_type {cfg.get('peft_type')!r} is not LORA; vLLM serves LoRA only",
                         hint="serve it with `quantgrid serve`")
    return max(ranks)


def _base_fingerprint(base: str) -> str | None:
    """The fingerprint of a local base directory, from its config.json (None for a hub id)."""
    from quantgrid.adapter import BaseShape

    cfg = Path(base).expanduser() / "config.json"
    if not cfg.is_file():
        return None
    return BaseShape.from_config(json.loads(cfg.read_text(encoding="utf-8")), name="").fingerprint


def _adapter_base(path: Path) -> tuple[str | None, str | None]:
    from quantgrid.ml.models import read_adapter_base  # module is torch-free at import

    return read_adapter_base(path)


@dataclass
class VllmCommand:
    """What vLLM's OpenAI server is started with; :meth:`argv` is the command line."""

    base: str
    modules: dict[str, Path]
    max_lora_rank: int
    max_loras: int
    chat_template: Path | None
    host: str = "127.0.0.1"
    port: int = 8000
    python: str = "python"
    extra: list[str] = field(default_factory=list)

    def argv(self) -> list[str]:
        cmd = [self.python, "-m", VLLM_MODULE, "--model", self.base, "--enable-lora",
               "--lora-modules", *(f"{n}={p}" for n, p in self.modules.items()),
               "--max-lora-rank", str(self.max_lora_rank), "--max-loras", str(self.max_loras)]
        if self.chat_template is not None:
            cmd += ["--chat-template", str(self.chat_template)]
        return [*cmd, "--host", self.host, "--port", str(self.port), *self.extra]


def parse_adapters(specs: list[str]) -> dict[str, Path]:
    """``NAME=PATH`` flags -> {name: path}; the names vLLM will serve them under."""
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--adapter {spec!r} is not NAME=PATH", hint="e.g. --adapter options=./adapters/options")
        if not _NAME_RE.match(name) or name == RELEASE_NAME:
            raise ConfigError(f"--adapter {spec!r}: {name!r} cannot be a model name here",
                              hint=f"use letters, digits, '.', '_', '-', ':'; {RELEASE_NAME!r} is the release")
        if name in out:
            raise ConfigError(f"--adapter {name} is given twice", hint="give each adapter a distinct name")
        out[name] = Path(path).expanduser().resolve()
    return out


def build_command(base: str, adapters: dict[str, Path], release: ReleaseRef | None = None, *,
                  host: str = "127.0.0.1", port: int = 8000, python: str = "python",
                  max_lora_rank: int | None = None, max_loras: int | None = None,
                  chat_template: Path | None = None, extra: list[str] | None = None) -> VllmCommand:
    """The vLLM server command for ``base`` with ``adapters`` and the release as ``quantgrid``.

    Checks what vLLM would only find at start-up (or on the first request): every adapter
    directory is a LoRA, its rank fits, all were trained for this base (quantgrid.json).
    ``max_lora_rank`` leaves room for later, larger releases swapped in by the deploy loop.
    """
    modules = dict(adapters)
    if release is not None:
        modules = {RELEASE_NAME: Path(release.path).resolve(), **modules}
    if not modules:
        raise ConfigError("nothing to serve: no --adapter and no release",
                          hint="add --adapter NAME=PATH, or --hub URL --release latest")
    local = Path(base).expanduser()
    if local.exists() and not (local / "config.json").is_file():
        raise ModelError(f"--base {base}: no config.json, not a model directory",
                         hint="pass a Hugging Face model directory (`quantgrid base tiny DIR` builds one)")
    base_fp = _base_fingerprint(base)
    ranks = {}
    seen: dict[str, tuple[str, str]] = {}  # fingerprint -> (adapter, base name)
    for name, path in modules.items():
        ranks[name] = adapter_rank(path)
        trained_for, fp = _adapter_base(path)
        if fp is None:
            continue
        if base_fp is not None and fp != base_fp:
            raise AdapterMismatchError(
                f"adapter {name} ({path}) was trained for base {trained_for!r} (fingerprint {fp}), "
                f"not for --base {base} (fingerprint {base_fp})",
                hint="use the base the adapter was trained on (see its quantgrid.json), or drop the adapter")
        seen.setdefault(fp, (name, str(trained_for)))
    if len(seen) > 1:
        listing = "; ".join(f"{a} for {b!r} ({fp})" for fp, (a, b) in seen.items())
        raise AdapterMismatchError(f"the adapters were trained for different bases: {listing}",
                                   hint="one vLLM server serves one base: split them across servers")
    need = max(ranks.values())
    if max_lora_rank is not None:
        if max_lora_rank < need:
            top = max(ranks, key=ranks.__getitem__)
            raise ConfigError(f"--max-lora-rank {max_lora_rank} is below adapter {top}'s rank {need}",
                              hint=f"use --max-lora-rank {vllm_rank(need)} or leave it out")
        need = max_lora_rank
    if chat_template is None:
        chat_template = _chat_template(modules)
    elif not Path(chat_template).is_file():
        raise ConfigError(f"--chat-template {chat_template}: no such file",
                          hint="pass a Jinja file, e.g. the release's chat_template.jinja")
    return VllmCommand(base=str(local.resolve()) if local.exists() else base, modules=modules,
                       max_lora_rank=vllm_rank(need), max_loras=max_loras or len(modules),
                       chat_template=Path(chat_template).resolve() if chat_template else None,
                       host=host, port=port, python=python, extra=list(extra or []))


def _chat_template(modules: dict[str, Path]) -> Path | None:
    """The release's shipped chat template, else the adapters' (vLLM has one per server)."""
    found = {n: p / "chat_template.jinja" for n, p in modules.items() if (p / "chat_template.jinja").is_file()}
    if not found:
        return None
    if RELEASE_NAME in found:
        chosen = RELEASE_NAME
    else:
        chosen = next(iter(found))
    texts = {found[n].read_text(encoding="utf-8") for n in found}
    if len(texts) > 1:
        log.warning("the adapters ship different chat templates; vLLM uses one per server: %s's (%s). "
                    "Chat with the others renders that prompt; use completions with their own prompt.",
                    chosen, found[chosen])
    return found[chosen]


# ----------------------------------------------------------------------------- auto-deploy


class VllmSwapError(QuantGridError):
    exit_code = 1


class VllmDeployer:
    """Keeps vLLM's ``quantgrid`` model on the source's latest release.

    The current release is read back from vLLM's ``/v1/models`` (its ``root`` is the
    path it was loaded from), so a restarted deploy loop does not reload what is there.
    """

    def __init__(self, vllm_url: str, source: ReleaseSource, *, interval_s: float = 300.0,
                 name: str = RELEASE_NAME, api_key: str | None = None, timeout_s: float = 120.0,
                 max_lora_rank: int | None = None):
        import httpx

        self.url = vllm_url.rstrip("/")
        self.source = source
        self.interval_s = interval_s
        self.name = name
        self.max_lora_rank = max_lora_rank
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.url, timeout=timeout_s, headers=headers)
        self.version: str | None = None
        self.path: Path | None = None
        self.swaps = 0
        self.failures = 0
        self._stop = threading.Event()

    def close(self) -> None:
        self.http.close()

    def loaded(self) -> Path | None:
        """The path vLLM has the ``quantgrid`` model loaded from (None if it has none)."""
        resp = self.http.get("/v1/models")
        resp.raise_for_status()
        for m in resp.json().get("data", []):
            if m.get("id") == self.name and m.get("parent"):
                return Path(m["root"])
        return None

    def _post(self, route: str, body: dict) -> tuple[int, str]:
        resp = self.http.post(route, json=body)
        return resp.status_code, resp.text

    def swap(self, ref: ReleaseRef) -> bool:
        """Make ``ref`` vLLM's ``quantgrid`` model; False if it already is. On failure the old
        release is loaded back and VllmSwapError says why."""
        if self.path is None and self.version is None:
            current = self.loaded()
            if current is not None:
                self.path = current
                self.version = release_version(current) if current.is_dir() else None
        if ref.version == self.version or (self.path is not None and Path(ref.path).resolve() == self.path):
            self.version = ref.version
            return False
        if self.max_lora_rank is not None and adapter_rank(ref.path) > self.max_lora_rank:
            raise VllmSwapError(f"release {ref.version} has rank {adapter_rank(ref.path)}, above the server's "
                                f"--max-lora-rank {self.max_lora_rank}; keeping release {self.version}",
                                hint="restart vLLM with a larger --max-lora-rank (`quantgrid vllm command`)")
        path = str(Path(ref.path).resolve())
        if self.path is not None:
            status, text = self._post("/v1/unload_lora_adapter", {"lora_name": self.name})
            if status != 200 and status != 404:  # 404: it was not loaded, nothing to unload
                raise VllmSwapError(f"vLLM refused to unload {self.name!r} (HTTP {status}: {text[:300]})",
                                    hint="check the vLLM server's log; the old release is still served")
        status, text = self._post("/v1/load_lora_adapter", {"lora_name": self.name, "lora_path": path})
        if status != 200:
            restored = ""
            if self.path is not None:
                back, _ = self._post("/v1/load_lora_adapter", {"lora_name": self.name, "lora_path": str(self.path)})
                restored = (f"; release {self.version} is served again" if back == 200
                            else f"; reloading release {self.version} also failed (HTTP {back})")
            raise VllmSwapError(f"vLLM refused release {ref.version} from {path} (HTTP {status}: {text[:300]})"
                                f"{restored}", hint="the deploy loop retries at its next check")
        old, self.version, self.path = self.version, ref.version, Path(path)
        self.swaps += 1
        log.info("vLLM %s: %s now serves release %s (was %s) from %s", self.url, self.name, ref.version,
                 old or "none", path)
        return True

    def check_now(self) -> bool:
        """One poll: swap the latest release in if it changed. Errors are logged, never raised."""
        try:
            ref = self.source.latest()
            if ref is None:
                log.info("the hub has published no release yet")
                return False
            return self.swap(ref)
        except Exception as e:  # the hub or vLLM being down must not end the loop
            self.failures += 1
            log.warning("release swap failed (keeping %s, retrying in %gs): %s", self.version or "none",
                        self.interval_s, e)
            return False

    def run(self, max_checks: int | None = None) -> None:
        """Poll every ``interval_s`` until :meth:`stop` (or ``max_checks`` polls)."""
        n = 0
        while not self._stop.is_set():
            self.check_now()
            n += 1
            if max_checks is not None and n >= max_checks:
                return
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
