"""Starting and stopping the studio's processes (Redis, Celery worker, Daphne); used by ``manage.py studio`` and by
the test suite's fixtures. Standard library only, so it can run before Django is set up."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence
from urllib.parse import urlparse


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    """Whether a Redis server answers PING at ``url``."""
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=timeout) as conn:
            if parsed.password:
                conn.sendall(f"AUTH {parsed.password}\r\n".encode())
                conn.recv(64)
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class ManagedProcess:
    """A child process in its own process group, with its output in a log file; stopped politely, then killed."""

    def __init__(self, name: str, command: Sequence[str], log_path: Path, env: Optional[dict] = None,
                 cwd: Optional[Path] = None):
        self.name, self.command, self.log_path = name, list(command), Path(log_path)
        self.env, self.cwd = env, cwd
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> "ManagedProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=self.env, cwd=self.cwd, start_new_session=True)
        log.close()
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_until(self, ready, timeout: float, what: str) -> None:
        """Poll ``ready()`` until true; fail with the log's tail if the process exits or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            if not self.running:
                raise RuntimeError(f"{self.name} exited before {what}:\n{self.log_tail()}")
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not {what} after {timeout:.0f} s:\n{self.log_tail()}")

    def wait_for_log(self, text: str, timeout: float) -> None:
        start = self.log_path.stat().st_size if self.log_path.exists() else 0

        def logged() -> bool:
            with open(self.log_path, "rb") as handle:
                handle.seek(start)
                return text.encode() in handle.read()

        self.wait_until(logged, timeout, f"logged {text!r}")

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM to the whole group (a Celery worker and its pool children), SIGKILL after ``timeout``."""
        if not self.running:
            return
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the whole group at once: what a crashed machine or the OOM killer does."""
        if self.process is not None:
            self._signal(signal.SIGKILL)
            self.process.wait(10)

    def _signal(self, signum: int) -> None:
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass


def start_redis(directory: Path) -> tuple[ManagedProcess, str]:
    """A private redis-server on a free localhost port (no persistence); returns it and its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("no Redis answers at REDIS_URL and redis-server is not installed: install Redis "
                           "(apt install redis-server / brew install redis) or set REDIS_URL")
    port = free_port()
    process = ManagedProcess("redis", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                       "--appendonly", "no", "--dir", str(directory)],
                             directory / "redis.log").start()
    url = f"redis://127.0.0.1:{port}/0"
    process.wait_until(lambda: redis_answers(url), 20, "answering PING")
    return process, url


def worker_command(name: str, queues: str = "interactive,training", concurrency: int = 1) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "gpu_worker.celery_app", "worker", "-Q", queues,
            "-c", str(concurrency), "-n", name, "--without-gossip", "--without-mingle", "-l", "INFO"]


def daphne_command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "daphne", "-b", host, "-p", str(port), "webapp.asgi:application"]
