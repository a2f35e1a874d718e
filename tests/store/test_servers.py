"""The test servers themselves: nginx honours Range, and the cutting proxy cuts as told."""
from __future__ import annotations

import http.client
import os
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from servers import cutting_proxy, nginx_server

LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # ignores *_proxy variables


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[tuple[str, bytes]]:
    """nginx serving one 1 MiB file, blob.bin; yields (base URL, its bytes)."""
    root: Path = tmp_path_factory.mktemp("site")
    data = os.urandom(1 << 20)
    (root / "blob.bin").write_bytes(data)
    with nginx_server(root) as url:
        yield url, data


def test_nginx_honours_range(site):
    url, data = site
    request = urllib.request.Request(f"{url}/blob.bin", headers={"Range": "bytes=1000-70999"})
    with LOCAL.open(request, timeout=5) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes 1000-70999/{len(data)}"
        assert response.read() == data[1000:71000]


def test_proxy_cuts_once_then_forwards(site):
    url, data = site
    with cutting_proxy(urlsplit(url).port, cut_after=100_000, cuts=1) as proxy:
        with socket.create_connection(("127.0.0.1", urlsplit(proxy.url).port), timeout=5) as s:
            s.sendall(b"GET /blob.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            received = b""
            with pytest.raises(ConnectionResetError):
                while chunk := s.recv(1 << 16):
                    received += chunk
        # exactly cut_after bytes (headers + part of the body), then a reset
        assert len(received) == 100_000
        assert received.startswith(b"HTTP/1.1 200")
        assert proxy.cut == 1
        with LOCAL.open(f"{proxy.url}/blob.bin", timeout=5) as response:
            assert response.read() == data
        assert proxy.cut == 1


def test_proxy_counts_bytes_per_connection(site):
    """Keep-alive: small responses on one connection add up; the one passing cut_after is cut."""
    url, data = site
    with cutting_proxy(urlsplit(url).port, cut_after=150_000, cuts=1) as proxy:
        conn = http.client.HTTPConnection("127.0.0.1", urlsplit(proxy.url).port, timeout=5)
        headers = {"Range": "bytes=0-59999"}
        for _ in range(2):  # 2 x (60000 + headers) < 150000
            conn.request("GET", "/blob.bin", headers=headers)
            assert conn.getresponse().read() == data[:60000]
        conn.request("GET", "/blob.bin", headers=headers)
        with pytest.raises((http.client.IncompleteRead, ConnectionError)):
            conn.getresponse().read()
        conn.close()
        assert proxy.cut == 1
