"""Small shared helpers with no heavy imports: atomic writes and hashing."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def load_yaml_mapping(path: Path, label: str) -> dict:
    """Parse a YAML file that must hold a mapping (an empty file is an empty mapping).

    ``label`` starts each error message, e.g. the path or the flag that named it. The
    caller checks that the file exists, since what to do about a missing file differs.
    """
    import yaml

    from quantgrid.errors import ConfigFileError

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigFileError(f"{label}: not valid YAML: {' '.join(str(e).split())}",
                              hint="fix the YAML at the line named above") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigFileError(f"{label}: cannot be read: {getattr(e, 'strerror', None) or e}",
                              hint="pass a readable UTF-8 YAML file") from None
    if not isinstance(data, dict):
        raise ConfigFileError(f"{label}: expected a YAML mapping, got {type(data).__name__}",
                              hint="write settings as `name: value` lines")
    return data


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (the directory entry, not just the file data)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask_mode() -> int:
    """The mode a plain open() would give a new file (mkstemp's temp files are 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | Path, data: bytes, mode: int | None = None) -> Path:
    """temp file in the same directory -> fsync -> rename: readers see old or new, never half.

    ``mode`` defaults to what a plain open() gives (0666 less the umask); secrets pass 0o600,
    which then holds from the first byte written, with no window before a chmod.
    """
    path = Path(path)
    with atomic_path(path, mode) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return path


def atomic_write_text(path: str | Path, text: str, mode: int | None = None) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), mode)


@contextlib.contextmanager
def atomic_path(path: str | Path, mode: int | None = None) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success fsync it, rename it into place, on error delete it.

    For writers (safetensors, gguf, zip) that want a file name rather than bytes. ``mode`` as in
    :func:`atomic_write_bytes` (set before anything is written).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, _umask_mode() if mode is None else mode)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory in a temp sibling and rename it into place when complete.

    A crash leaves the old directory (or nothing), never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    tmp.chmod(0o777 & ~(0o666 ^ _umask_mode()))  # mkdtemp gives 0700; a plain mkdir honours the umask
    try:
        yield tmp
        if path.exists():
            if not overwrite:
                raise FileExistsError(path)
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(path.parent)
