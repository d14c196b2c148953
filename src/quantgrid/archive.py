"""Reading a stranger's zip safely: in memory, under streaming caps, never extracted.

The hub receives submissions from anyone. ``read_zip`` turns the uploaded
bytes into ``{name: bytes}`` for an allowlist of names, or raises ``ValidationError``
with a ``check`` that names the rule broken. It never writes to disk and never reads
more than the caps allow, whatever the archive claims about itself.

The checks, in order:

* the central directory parses, has few entries, and starts where it says it does;
* every name is a plain relative path (no absolute, ``..``, backslash, drive letter,
  control characters), unique (also ignoring case), and on the allowlist;
* no symlinks or other special files, no encryption, only stored/deflate;
* each entry's local header agrees with the central directory, and the byte ranges of
  all entries are disjoint and inside the archive: overlapping entries are how
  "non-recursive" zip bombs get a 10^6 ratio out of one compressed block;
* declared sizes are under the caps before anything is decompressed, and the streaming
  read stops at the cap even if the declared size lies (the CRC then fails);
* no entry is itself an archive (by magic bytes, whatever its name).

Torch-free: the hub's stage 1 and the thin client both use it.
"""

from __future__ import annotations

import io
import re
import stat
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

from quantgrid.errors import ValidationError

# Local file header: signature, version, flags, method, time, date, crc, csize, usize, name len, extra len.
_LOCAL = struct.Struct("<4sHHHHHLLLHH")
_LOCAL_SIG = b"PK\x03\x04"
# A data descriptor (flag bit 3) may follow an entry's data: 12-24 bytes with or without signature / zip64.
_MAX_GAP = 24
_ALLOWED_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}

# Magic bytes of archive and compressed formats: an entry that is one is a nested archive.
_NESTED_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"PK\x03\x04", "zip"), (0, b"PK\x05\x06", "zip"), (0, b"PK\x07\x08", "zip"),
    (0, b"\x1f\x8b", "gzip"), (0, b"\xfd7zXZ\x00", "xz"), (0, b"7z\xbc\xaf\x27\x1c", "7z"),
    (0, b"Rar!\x1a\x07", "rar"), (0, b"\x28\xb5\x2f\xfd", "zstd"), (4, b"1AY&SY", "bzip2"),
    (257, b"ustar", "tar"),
)
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")


@dataclass(frozen=True)
class Caps:
    """Limits on what one submission may contain. Defaults fit a 7B r=16 adapter easily."""

    max_archive_bytes: int = 512 << 20
    max_entries: int = 64
    max_entry_bytes: int = 512 << 20  # the weights file
    max_small_entry_bytes: int = 8 << 20  # everything else: json, md, yaml, png
    max_total_bytes: int = 600 << 20
    max_ratio: float = 1000.0  # uncompressed / compressed, per entry
    chunk: int = 1 << 16

    def entry_cap(self, name: str) -> int:
        return self.max_entry_bytes if name.endswith(".safetensors") else self.max_small_entry_bytes


def _reject(check: str, message: str, hint: str | None = None) -> ValidationError:
    return ValidationError(message, hint=hint, check=f"archive.{check}")


def check_name(name: str) -> None:
    """Reject every way a name could point outside the archive's own tree (zip-slip)."""
    if not name:
        raise _reject("unsafe_path", "an entry has an empty name")
    if "\x00" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise _reject("unsafe_path", f"entry name {name!r} contains control characters")
    if "\\" in name:
        raise _reject("unsafe_path", f"entry name {name!r} contains a backslash",
                      hint="zip entries use '/' as the separator")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise _reject("unsafe_path", f"entry name {name!r} is an absolute path")
    parts = name.rstrip("/").split("/")
    if any(p in ("..", ".", "") for p in parts):
        raise _reject("unsafe_path", f"entry name {name!r} has '..', '.' or empty path components")
    if not _NAME_RE.match(name.rstrip("/")):
        raise _reject("unsafe_path", f"entry name {name!r} has characters outside [A-Za-z0-9_.-/]")


def nested_archive_kind(head: bytes) -> str | None:
    for offset, magic, kind in _NESTED_MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return kind
    return None


def _is_special_file(info: zipfile.ZipInfo) -> str | None:
    """'symlink' / 'special file' when the Unix mode bits say it is not a regular file."""
    mode = info.external_attr >> 16
    if info.create_system == 3 and mode:
        fmt = stat.S_IFMT(mode)
        if fmt == stat.S_IFLNK:
            return "symlink"
        if fmt not in (0, stat.S_IFREG, stat.S_IFDIR):
            return "special file"
    return None


def _entry_range(data: bytes, info: zipfile.ZipInfo) -> tuple[int, int]:
    """[start, end) of an entry's local header + compressed data, checked against the central directory."""
    off = info.header_offset
    if off < 0 or off + _LOCAL.size > len(data):
        raise _reject("corrupt", f"entry {info.filename!r} points outside the archive")
    sig, _v, flags, method, _t, _d, _crc, _cs, _us, nlen, elen = _LOCAL.unpack_from(data, off)
    if sig != _LOCAL_SIG:
        raise _reject("corrupt", f"entry {info.filename!r} has no local header where the directory says")
    if method != info.compress_type or (flags & 1) != (info.flag_bits & 1):
        raise _reject("corrupt", f"entry {info.filename!r}: local header disagrees with the central directory")
    end = off + _LOCAL.size + nlen + elen + info.compress_size
    return off, end


def _check_layout(data: bytes, zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> None:
    """No prepended data, no overlapping entries, no hidden bytes between them."""
    start_dir = getattr(zf, "start_dir", len(data))
    ranges = sorted((_entry_range(data, i) + (i.filename,)) for i in infos)
    pos = 0
    for start, end, name in ranges:
        if start < pos:
            raise _reject("overlap", f"entry {name!r} overlaps another entry's data",
                          hint="overlapping entries are a zip-bomb technique; build the zip with "
                               "`quantgrid package`")
        if start - pos > (_MAX_GAP if pos else 0):
            what = "before the first entry" if pos == 0 else f"before entry {name!r}"
            raise _reject("layout", f"the archive has {start - pos} unexplained bytes {what}",
                          hint="a submission must be a plain zip, not a polyglot or a concatenation")
        pos = end
    if pos > start_dir:
        raise _reject("overlap", "an entry's data runs into the central directory")
    if start_dir - pos > _MAX_GAP:
        raise _reject("layout", f"the archive has {start_dir - pos} unexplained bytes before its directory",
                      hint="a submission must be a plain zip, not a polyglot or a concatenation")


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int, caps: Caps) -> bytes:
    """Stream one entry into memory, stopping at ``cap`` bytes whatever the header claims."""
    buf = bytearray()
    with zf.open(info) as f:
        while True:
            block = f.read(min(caps.chunk, cap + 1 - len(buf)))
            if not block:
                break
            buf += block
            if len(buf) > cap:
                raise _reject("bomb", f"entry {info.filename!r} expands past its {cap}-byte cap")
    if len(buf) != info.file_size:
        raise _reject("corrupt", f"entry {info.filename!r} is {len(buf)} bytes, not the {info.file_size} it declares")
    return bytes(buf)


def read_zip(data: bytes, *, allowed: Callable[[str], bool], caps: Caps = Caps(),
             allowed_dirs: frozenset[str] = frozenset()) -> dict[str, bytes]:
    """``{name: bytes}`` of a zip's entries, or ``ValidationError`` naming the broken rule.

    ``allowed(name)`` is the allowlist; directory entries are accepted only for
    ``allowed_dirs`` and carry no data. Any malformed input becomes ``archive.corrupt``.
    """
    if len(data) > caps.max_archive_bytes:
        raise _reject("too_large", f"the archive is {len(data)} bytes; the limit is {caps.max_archive_bytes}")
    try:
        return _read_zip(data, allowed, caps, allowed_dirs)
    except ValidationError:
        raise
    except Exception as e:  # noqa: BLE001 - the boundary: any malformed bytes are a clean rejection
        raise _reject("corrupt", f"not a readable zip archive ({type(e).__name__}: {str(e)[:120]})",
                      hint="build the submission with `quantgrid package`") from None


def _read_zip(data: bytes, allowed: Callable[[str], bool], caps: Caps,
              allowed_dirs: frozenset[str]) -> dict[str, bytes]:
    zf = zipfile.ZipFile(io.BytesIO(data))
    infos = zf.infolist()
    if not infos:
        raise _reject("missing", "the archive is empty")
    if len(infos) > caps.max_entries:
        raise _reject("too_large", f"the archive has {len(infos)} entries; the limit is {caps.max_entries}")
    seen: set[str] = set()
    files: list[zipfile.ZipInfo] = []
    declared_total = 0
    for info in infos:
        name = info.filename
        # zipfile rewrites '\\' to '/' on Windows only; check the raw name as stored too.
        check_name(name)
        key = name.rstrip("/").casefold()
        if key in seen:
            raise _reject("duplicate", f"the archive holds {name!r} twice",
                          hint="duplicate names let two readers see different files")
        seen.add(key)
        special = _is_special_file(info)
        if special:
            raise _reject("symlink" if special == "symlink" else "special_file", f"entry {name!r} is a {special}")
        if info.flag_bits & 0x41:
            raise _reject("encrypted", f"entry {name!r} is encrypted", hint="submissions must not be encrypted")
        if info.compress_type not in _ALLOWED_METHODS:
            raise _reject("compression", f"entry {name!r} uses compression method {info.compress_type}",
                          hint="only stored and deflate entries are accepted")
        if info.is_dir():
            if name.rstrip("/") not in allowed_dirs or info.file_size:
                raise _reject("not_allowed", f"directory entry {name!r} is not allowed")
            continue
        if not allowed(name):
            raise _reject("not_allowed", f"entry {name!r} is not an allowed submission file",
                          hint=_not_allowed_hint(name))
        cap = caps.entry_cap(name)
        if info.file_size > cap:
            raise _reject("bomb" if info.compress_size * caps.max_ratio < info.file_size else "too_large",
                          f"entry {name!r} declares {info.file_size} bytes; the limit is {cap}")
        if info.file_size > max(info.compress_size, 1) * caps.max_ratio:
            raise _reject("bomb", f"entry {name!r} compresses {info.file_size / max(info.compress_size, 1):.0f}:1, "
                                  f"over the {caps.max_ratio:.0f}:1 limit")
        declared_total += info.file_size
        if declared_total > caps.max_total_bytes:
            raise _reject("bomb", f"the entries declare more than {caps.max_total_bytes} bytes in total")
        files.append(info)
    _check_layout(data, zf, infos)
    out: dict[str, bytes] = {}
    for info in files:
        body = _read_entry(zf, info, caps.entry_cap(info.filename), caps)
        kind = nested_archive_kind(body[:512])
        if kind:
            raise _reject("nested", f"entry {info.filename!r} is a {kind} archive",
                          hint="nested archives are not accepted; put the files in the submission itself")
        out[info.filename] = body
    return out


def _not_allowed_hint(name: str) -> str:
    low = name.lower()
    if low.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")):
        return "pickle-based weights are never loaded; save adapter_model.safetensors"
    if low.endswith((".zip", ".tar", ".gz", ".tgz", ".7z", ".rar", ".xz", ".bz2")):
        return "nested archives are not accepted"
    return "build the submission with `quantgrid package`, which keeps only the allowed files"
