"""Hostile uploads against a real `quantgrid hub serve` process on 127.0.0.1: what is refused at
the headers reads no body, stalled bodies are cut off, parallel pushes past a limit leave no
blob, and the hub stays healthy for everyone else. Every loop here is bounded."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

pytest.importorskip("fastapi")

from _hub_process import HubProcess  # noqa: E402


def _headers(sha: str, length: int, token: str | None = None, key: str | None = None) -> bytes:
    lines = ["POST /v1/submissions HTTP/1.1", "Host: 127.0.0.1", f"X-Content-SHA256: {sha}",
             "Content-Type: application/zip", f"Content-Length: {length}"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if key:
        lines.append(f"Idempotency-Key: {key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_response(sock: socket.socket, timeout: float) -> tuple[int, dict[str, str], bool]:
    """(status, headers, closed): the response head, and whether the server then hung up.
    ``_read_response.at`` is when the head arrived (time.monotonic)."""
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    _read_response.at = time.monotonic()
    head = buf.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
    closed = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                closed = True
                break
    except TimeoutError:
        pass  # still open
    except ConnectionResetError:
        closed = True
    return status, headers, closed


def _blob_files(hub: HubProcess) -> list:
    root = hub.storage / "blobs" / "sha256"
    return [p for p in root.glob("*/*/*")] if root.exists() else []


def _tmp_files(hub: HubProcess) -> list:
    return list((hub.storage / "blobs" / "tmp").glob("upload-*.tmp"))


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    h = HubProcess(tmp_path_factory.mktemp("front") / "storage", args=("--no-worker",), env={
        "QUANTGRID_HUB_RATE_LIMIT_BURST": "1000", "QUANTGRID_HUB_RATE_LIMIT_PER_MINUTE": "6000",
        "QUANTGRID_HUB_UPLOAD_READ_TIMEOUT_SECONDS": "1.5", "QUANTGRID_HUB_MAX_UPLOAD_BYTES": str(64 << 20)})
    h.start()
    yield h
    h.stop()


def test_anonymous_trickled_upload_is_refused_at_the_headers(hub):
    """No token, a 60 MB Content-Length and a trickle of bytes: 401 at once, then the hub hangs up."""
    with socket.create_connection(("127.0.0.1", hub.port), timeout=10) as s:
        s.sendall(_headers("0" * 64, 60 << 20))
        s.sendall(b"PK\x03\x04")
        t0 = time.monotonic()
        status, headers, closed = _read_response(s, timeout=5)
        assert status == 401 and _read_response.at - t0 < 3
        assert headers["www-authenticate"].startswith("Bearer")
        assert closed, "the hub kept the connection open to drain the anonymous body"
    with socket.create_connection(("127.0.0.1", hub.port), timeout=10) as s:  # a bad token: same
        s.sendall(_headers("0" * 64, 60 << 20, token="qg_forged"))
        status, headers, closed = _read_response(s, timeout=5)
        assert status == 401 and 'error="invalid_token"' in headers["www-authenticate"] and closed


def test_hundreds_of_half_sent_anonymous_uploads_do_not_take_the_hub_down(hub):
    socks = []
    try:
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", hub.port), timeout=10)
            s.sendall(_headers("0" * 64, 60 << 20) + b"PK")
            socks.append(s)
        t0 = time.monotonic()
        assert httpx.get(f"{hub.url}/v1/health", timeout=10).status_code == 200
        assert time.monotonic() - t0 < 5
        answered = sum(_read_response(s, timeout=5)[0] == 401 for s in socks[:20])
        assert answered == 20
    finally:
        for s in socks:
            s.close()
    deadline = time.monotonic() + 10  # the hub let go of those connections: its open files drop back
    while len(os.listdir(f"/proc/{hub.proc.pid}/fd")) > 200:
        assert time.monotonic() < deadline, len(os.listdir(f"/proc/{hub.proc.pid}/fd"))
        time.sleep(0.1)


def test_a_stalled_authenticated_upload_is_cut_off_and_leaves_no_file(hub):
    token = hub.add_user("stall")
    data = b"PK\x03\x04" + os.urandom(200_000)
    with socket.create_connection(("127.0.0.1", hub.port), timeout=10) as s:
        s.sendall(_headers(hashlib.sha256(data).hexdigest(), len(data), token=token))
        s.sendall(data[:1000])  # then nothing: the read timeout (1.5 s here) cuts it off
        t0 = time.monotonic()
        status, _, closed = _read_response(s, timeout=8)
        assert status == 408 and 1.0 < _read_response.at - t0 < 6 and closed
    assert _tmp_files(hub) == [] and _blob_files(hub) == []


def test_concurrent_uploads_per_user_are_capped_at_the_headers(hub):
    token, other = hub.add_user("hog"), hub.add_user("polite")
    data = b"PK\x03\x04" + os.urandom(100_000)
    sha = hashlib.sha256(data).hexdigest()
    held = []
    try:
        for i in range(2):  # the default cap: two uploads in flight per user
            s = socket.create_connection(("127.0.0.1", hub.port), timeout=10)
            s.sendall(_headers(sha, len(data), token=token, key=f"k{i}") + data[:100])
            held.append(s)
        time.sleep(0.3)
        third = data + b"3"
        r = httpx.post(f"{hub.url}/v1/submissions", content=third, timeout=10, headers={
            "Authorization": f"Bearer {token}", "X-Content-SHA256": hashlib.sha256(third).hexdigest()})
        assert r.status_code == 429 and "in progress" in r.json()["error"]["message"]
        assert int(r.headers["retry-after"]) >= 1
        r = httpx.post(f"{hub.url}/v1/submissions", content=third, timeout=10, headers={
            "Authorization": f"Bearer {other}", "X-Content-SHA256": hashlib.sha256(third).hexdigest()})
        assert r.status_code == 201  # other users are not affected
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 10  # the dropped uploads free their slots and temp files
    while _tmp_files(hub):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_parallel_pushes_past_the_daily_limit_leave_no_orphan_blobs(tmp_path):
    hub = HubProcess(tmp_path / "storage", args=("--no-worker",), env={
        "QUANTGRID_HUB_RATE_LIMIT_BURST": "1000", "QUANTGRID_HUB_DAILY_SUBMISSION_LIMIT": "20",
        "QUANTGRID_HUB_MAX_CONCURRENT_UPLOADS_PER_USER": "30"})
    hub.start()
    try:
        token = hub.add_user("farmer")
        zips = [b"PK\x03\x04" + f"zip {i} ".encode() * 3000 for i in range(30)]

        def push(data: bytes) -> int:
            return httpx.post(f"{hub.url}/v1/submissions", content=data, timeout=30, headers={
                "Authorization": f"Bearer {token}", "X-Content-SHA256": hashlib.sha256(data).hexdigest()}).status_code

        with ThreadPoolExecutor(max_workers=30) as pool:
            codes = list(pool.map(push, zips))
        assert sorted(codes) == [201] * 20 + [429] * 10, codes
        assert len(_blob_files(hub)) == 20 and _tmp_files(hub) == []
        assert httpx.get(f"{hub.url}/v1/submissions", headers={"Authorization": f"Bearer {token}"},
                         timeout=10).json()["items"].__len__() == 20
    finally:
        hub.stop()


def test_anonymous_traffic_from_the_same_address_does_not_block_a_users_push(tmp_path):
    """Behind one NAT, anonymous neighbours spend the address's rate limit; a logged-in user's
    `quantgrid push` sends every request with the token, so it counts against the user's own."""
    from _hub_process import clean_env, cli

    hub = HubProcess(tmp_path / "storage", args=("--no-worker",), env={"QUANTGRID_HUB_RATE_LIMIT_BURST": "20",
                                                                       "QUANTGRID_HUB_RATE_LIMIT_PER_MINUTE": "60"})
    hub.start()
    try:
        token = hub.add_user("alice")
        codes = [httpx.get(f"{hub.url}/v1/leaderboard", timeout=30).status_code for _ in range(40)]
        assert 429 in codes, codes  # the address is out of budget ...
        assert httpx.get(f"{hub.url}/v1/health", timeout=30).status_code == 429
        (tmp_path / "sub.zip").write_bytes(b"PK\x03\x04 validation judges the contents later")
        env = clean_env(tmp_path / "cfg", QUANTGRID_HUB=hub.url, QUANTGRID_TOKEN=token)
        pushed = cli(env, "push", str(tmp_path / "sub.zip"))
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr  # ... alice's is not
        assert "submission" in pushed.stdout.lower()
    finally:
        hub.stop()


def test_an_oversized_header_block_is_refused_and_the_hub_goes_on(hub):
    """Headers are bounded (64 KiB): a 1 MB header line is a 400, and the hub stays healthy."""
    with socket.create_connection(("127.0.0.1", hub.port), timeout=30) as s:
        try:
            s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
        except OSError:  # the hub may hang up before it has read everything
            pass
        assert s.recv(200).startswith(b"HTTP/1.1 400")
    assert httpx.get(f"{hub.url}/v1/health", headers={"X-Real": "a" * 8000}, timeout=30).status_code == 200
