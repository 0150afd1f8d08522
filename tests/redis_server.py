"""A real ``redis-server`` for tests, on 127.0.0.1 and a free port, stopped afterwards.

``RedisServer`` runs one process in a directory of its own (append-only file,
no RDB snapshots) and can be stopped and started again on the same port and
directory, which is how the tests restart Redis under running gateways.

The pairing contract suite shares one server for the whole session
(``shared_redis_server``; the ``stop_shared_redis_server`` fixture ends it):
every test gets its own key prefix, so tests never see each other's keys.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import datetime
import ipaddress
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REDIS_SERVER = shutil.which("redis-server")
NOT_INSTALLED = "redis-server is not installed (scripts/install-test-deps installs it)"
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: SIGTERM when the test process dies, even by SIGKILL (Linux prctl)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process; ``start`` again after ``stop`` keeps port and data."""

    def __init__(
        self,
        directory: Path,
        *,
        appendfsync: str = "everysec",
        password: str | None = None,
        tls: bool = False,
    ) -> None:
        if REDIS_SERVER is None:
            pytest.skip(NOT_INSTALLED)
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.appendfsync = appendfsync
        self.password = password
        self.ca_file: Path | None = write_tls_files(directory) if tls else None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert REDIS_SERVER is not None
        log = (self.directory / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                *self._listen_arguments(),
                *("--save", "", "--appendonly", "yes", "--appendfsync", self.appendfsync),
                *("--dir", str(self.directory), "--daemonize", "no"),
                *(("--requirepass", self.password) if self.password else ()),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.close()
        deadline = time.monotonic() + 20
        client = self.client(socket_timeout=1)
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited at start:\n{self.log()}")
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis-server never answered PING:\n{self.log()}")
                time.sleep(0.05)
        finally:
            client.close()

    def _listen_arguments(self) -> tuple[str, ...]:
        if self.ca_file is None:
            return ("--port", str(self.port), "--bind", "127.0.0.1")
        d = self.directory
        return (
            *("--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1"),
            *("--tls-cert-file", str(d / "server.pem"), "--tls-key-file", str(d / "server.key")),
            *("--tls-ca-cert-file", str(self.ca_file), "--tls-auth-clients", "no"),
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM lets Redis flush its append-only file; SIGKILL does not."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def url(self, prefix: str | None = None, db: int = 0) -> str:
        options = [f"prefix={prefix}"] if prefix else []
        if self.ca_file is not None:
            options.append(f"ssl_ca_certs={self.ca_file}")
        query = f"?{'&'.join(options)}" if options else ""
        credentials = f":{self.password}@" if self.password else ""
        scheme = "rediss" if self.ca_file else "redis"
        return f"{scheme}://{credentials}127.0.0.1:{self.port}/{db}{query}"

    def client(self, db: int = 0, socket_timeout: float | None = None) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            db=db,
            password=self.password,
            decode_responses=True,
            socket_timeout=socket_timeout,
            ssl=self.ca_file is not None,
            ssl_ca_certs=None if self.ca_file is None else str(self.ca_file),
        )

    def drop_prefix(self, prefix: str) -> None:
        """Delete every key under ``prefix:`` (the keys one test made)."""
        with contextlib.closing(self.client()) as client:
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            for start in range(0, len(keys), 1000):
                client.unlink(*keys[start : start + 1000])


def write_tls_files(directory: Path) -> Path:
    """A throw-away CA and a certificate for 127.0.0.1/localhost signed by it; the CA's path."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge test CA")])

    def certificate(subject: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    ca = (
        certificate(ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server = (
        certificate(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]), key)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    (directory / "server.pem").write_bytes(server.public_bytes(pem))
    (directory / "server.key").write_bytes(
        key.private_bytes(
            pem, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    return directory / "ca.pem"


_shared: RedisServer | None = None


def shared_redis_server() -> RedisServer:
    """The session's server, started at first use (tests that never need Redis never start it)."""
    global _shared
    if _shared is None:
        directory = Path(tempfile.mkdtemp(prefix="edge-redis-"))
        server = RedisServer(directory)
        server.start()
        _shared = server
        atexit.register(_stop_shared)  # in case the session ends without its fixture
    return _shared


def _stop_shared() -> None:
    global _shared
    if _shared is not None:
        _shared.stop()
        shutil.rmtree(_shared.directory, ignore_errors=True)
        _shared = None


@pytest.fixture(scope="session", autouse=True)
def stop_shared_redis_server() -> Iterator[None]:
    """Stop the shared server, if a test started it, when the session ends."""
    yield
    _stop_shared()


@contextlib.contextmanager
def redis_backend(tmp_path: Path) -> Iterator[str]:
    """A ``STORE_FACTORIES`` entry: an empty store under a fresh key prefix of the shared server."""
    server = shared_redis_server()
    prefix = f"t{uuid.uuid4().hex[:16]}"
    try:
        yield server.url(prefix)
    finally:
        server.drop_prefix(prefix)
