"""A real `quantgrid hub serve` process driven through the real CLI (login/push/status/...)."""

from __future__ import annotations

import json
import socket
import stat

import pytest

pytest.importorskip("fastapi")

from _hub_process import HubProcess, clean_env, cli  # noqa: E402


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hubcli")
    h = HubProcess(root / "storage", args=("--no-worker",), env={"QUANTGRID_HUB_MAX_UPLOAD_BYTES": "200000"})
    h.start()
    h.tokens = {name: h.add_user(name, admin=name == "root") for name in ("alice", "bob", "root")}
    yield h
    h.stop()


@pytest.fixture
def env(tmp_path, hub):
    return clean_env(tmp_path / "cfg", QUANTGRID_HUB=hub.url)


def _zip(tmp_path, name: str, payload: bytes):
    p = tmp_path / name
    p.write_bytes(b"PK\x03\x04" + payload)
    return p


def test_contributor_journey_through_the_cli(hub, env, tmp_path):
    r = cli(env, "whoami")
    assert r.returncode == 1 and "not logged in" in r.stderr and "Traceback" not in r.stderr
    r = cli(env, "login", input=hub.tokens["alice"] + "\n")  # the prompt path
    assert r.returncode == 0, r.stderr
    assert "logged in" in r.stdout and "alice" in r.stdout
    creds = tmp_path / "cfg" / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert json.loads(creds.read_text()) == {"hub": hub.url, "token": hub.tokens["alice"]}
    assert cli(env, "whoami").stdout.startswith("alice")

    z = _zip(tmp_path, "quantgrid_submission_1732240000.zip", b"journey" * 1000)
    r = cli(env, "push", str(z), "--json")
    assert r.returncode == 0, r.stderr
    sub = json.loads(r.stdout)
    assert sub["status"] == "queued" and sub["filename"] == z.name and not sub["duplicate"]
    again = json.loads(cli(env, "push", str(z), "--json").stdout)
    assert again["id"] == sub["id"] and again["duplicate"]

    r = cli(env, "status", str(sub["id"]))
    assert r.returncode == 0 and f"submission {sub['id']} by alice: queued" in r.stdout
    r = cli(env, "leaderboard")
    assert r.returncode == 0 and "alice" in r.stdout and "accepted adapters" in r.stdout

    assert cli(env, "logout").returncode == 0 and not creds.exists()


def test_auth_failures_are_one_line_401s(hub, env, tmp_path):
    r = cli(env, "login", "--token", "qg_wrong")
    assert r.returncode == 1 and "invalid API token" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "cfg" / "credentials.json").exists()  # a bad token is never saved

    bob = {**env, "QUANTGRID_TOKEN": hub.tokens["bob"]}
    z = _zip(tmp_path, "bob.zip", b"bob's adapter")
    bob_sub = json.loads(cli(bob, "push", str(z), "--json").stdout)
    alice = {**env, "QUANTGRID_TOKEN": hub.tokens["alice"]}
    r = cli(alice, "status", str(bob_sub["id"]))
    assert r.returncode == 1 and f"no submission {bob_sub['id']}" in r.stderr  # 404, not 403

    temp = hub.admin("user", "add", "temp")
    assert cli({**env, "QUANTGRID_TOKEN": temp}, "whoami").returncode == 0
    hub.admin("user", "revoke", "temp")
    r = cli({**env, "QUANTGRID_TOKEN": temp}, "whoami")
    assert r.returncode == 1 and "revoked" in r.stderr


def test_unreachable_hub_and_missing_file_are_clear_errors(env, tmp_path):
    r = cli({**env, "QUANTGRID_HUB": "http://127.0.0.1:9", "QUANTGRID_TOKEN": "x"}, "whoami")
    assert r.returncode == 1 and "cannot reach the hub" in r.stderr and "Traceback" not in r.stderr
    r = cli({**env, "QUANTGRID_TOKEN": "x"}, "push", str(tmp_path / "nope.zip"))
    assert r.returncode == 1 and "no such file" in r.stderr


def test_too_large_push_is_refused_by_the_client_and_the_server(hub, env, tmp_path):
    big = _zip(tmp_path, "big.zip", b"x" * 300_000)
    r = cli({**env, "QUANTGRID_TOKEN": hub.tokens["alice"]}, "push", str(big))
    assert r.returncode == 1 and "at most 200000" in r.stderr

    # A client that ignores the limit: the server answers 413 from the headers alone,
    # before reading a single body byte (we never send the body).
    with socket.create_connection(("127.0.0.1", hub.port), timeout=10) as s:
        s.sendall((f"POST /v1/submissions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {hub.tokens['alice']}\r\n"
                   f"X-Content-SHA256: {'0' * 64}\r\nContent-Type: application/zip\r\n"
                   f"Content-Length: 50000000\r\n\r\n").encode())
        s.sendall(b"x" * 1000)
        reply = _read_reply(s)
    assert reply.startswith("HTTP/1.1 413") and '"payload_too_large"' in reply


def test_body_outgrowing_the_limit_is_cut_off_with_413(hub):
    """Chunked upload without Content-Length is refused; one that lies about its size is cut off."""
    with socket.create_connection(("127.0.0.1", hub.port), timeout=10) as s:
        s.sendall((f"POST /v1/submissions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {hub.tokens['bob']}\r\n"
                   f"X-Content-SHA256: {'0' * 64}\r\nTransfer-Encoding: chunked\r\n\r\n").encode())
        s.sendall(b"10\r\n" + b"y" * 16 + b"\r\n")
        reply = _read_reply(s)
    assert reply.startswith("HTTP/1.1 422") and "Content-Length" in reply


def _read_reply(sock: socket.socket) -> str:
    """One whole HTTP response (headers + Content-Length body), however the bytes arrive."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed early: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return (head + b"\r\n\r\n" + body).decode(errors="replace")


@pytest.mark.slow  # builds the tiny base and runs the real validator in the hub process
def test_serve_runs_the_validation_worker_in_process(tmp_path, tiny_base):
    """`hub serve` (worker on by default) picks up a push and the real validator rejects junk with a report."""
    import time

    h = HubProcess(tmp_path / "storage", args=("--base-model", tiny_base))
    h.start()
    try:
        env = clean_env(tmp_path / "cfg", QUANTGRID_HUB=h.url, QUANTGRID_TOKEN=h.add_user("carol"))
        junk = _zip(tmp_path, "quantgrid_submission_1.zip", b"this is not a real zip archive")
        sub = json.loads(cli(env, "push", str(junk), "--json").stdout)
        deadline = time.monotonic() + 120
        while (status := h.client_status(env, sub["id"]))["status"] in ("queued", "validating"):
            assert time.monotonic() < deadline, f"never validated: {status}"
            time.sleep(0.5)
        assert status["status"] == "rejected" and status["score"] is None
        assert status["report"]["stage"] and status["report"]["check"]
        r = cli(env, "status", str(sub["id"]))
        assert "rejected" in r.stdout and "stage:" in r.stdout
    finally:
        h.stop()
