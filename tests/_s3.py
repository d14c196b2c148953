"""A real S3-protocol server for the hub's storage tests: moto in server mode, as its own
process on 127.0.0.1 (started once per test session that asks for it, stopped after)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from quantgrid.demo import free_port, stop_process

CREDENTIALS = {"key": "testing", "secret": "testing"}


@contextlib.contextmanager
def moto_server(timeout: float = 30.0) -> Iterator[str]:
    """``http://127.0.0.1:<port>`` of a fresh `moto` S3 server process."""
    pytest.importorskip("moto.server")
    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, "moto server exited"
                assert time.monotonic() < deadline, "moto server did not come up"
                time.sleep(0.1)
        yield url
    finally:
        stop_process(proc, timeout=10)


def storage_options(endpoint: str) -> dict:
    return {**CREDENTIALS, "endpoint_url": endpoint, "client_kwargs": {"region_name": "us-east-1"}}


def new_bucket(endpoint: str) -> str:
    """A new empty bucket; returns its name."""
    import s3fs

    name = f"qg-{uuid.uuid4().hex[:10]}"
    fs = s3fs.S3FileSystem(**storage_options(endpoint))
    fs.call_s3("create_bucket", Bucket=name)  # us-east-1: no location constraint (mkdir would send one)
    return name


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url
