"""A burst of concurrent API clients against a real Daphne on PostgreSQL: no request fails, and the server's database
connections stay within its pool. Persistent connections used to pile up, one per request thread under ASGI, until
PostgreSQL refused new clients and every request answered 500. Figures: docs/benchmarks.md."""
from __future__ import annotations

import http.client
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import psycopg
import pytest
from django.conf import settings

from bench import percentile

CLIENTS = 20
REQUESTS_PER_CLIENT = 25
APPLICATION_NAME = "studio-load-test"   # libpq's PGAPPNAME: tells the load-tested Daphne's connections apart

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
                       reason="connection pooling is about PostgreSQL's client limit; SQLite has no server "
                              "connections to exhaust (run with --studio-db=postgres)"),
]


class ConnectionCounter(threading.Thread):
    """The most backends PostgreSQL had at once for ``application_name``, sampled until :meth:`stop`."""

    def __init__(self, application_name: str):
        super().__init__(daemon=True)
        self.application_name, self.most, self._finished = application_name, 0, threading.Event()

    def count(self, connection) -> int:
        return connection.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                                  [self.application_name]).fetchone()[0]

    def run(self) -> None:
        from django.db import connection as django_connection

        db = django_connection.settings_dict
        with psycopg.connect(host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"],
                             password=db["PASSWORD"] or None, dbname=db["NAME"], autocommit=True) as connection:
            while not self._finished.wait(0.02):
                self.most = max(self.most, self.count(connection))

    def stop(self) -> int:
        self._finished.set()
        self.join(timeout=30)
        return self.most


def get_repeatedly(url: str, path: str, cookie: str, times: int) -> list[tuple[object, float]]:
    """``times`` GETs over one keep-alive connection → ``(status or exception name, seconds)`` each."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    results = []
    for _ in range(times):
        start = time.perf_counter()
        try:
            connection.request("GET", path, headers={"Cookie": cookie})
            response = connection.getresponse()
            response.read()
            results.append((response.status, time.perf_counter() - start))
        except (OSError, http.client.HTTPException) as exc:
            results.append((type(exc).__name__, time.perf_counter() - start))
            connection.close()   # the next request opens a new one
    connection.close()
    return results


def test_a_burst_of_clients_stays_within_the_connection_pool(studio, start_daphne, client_for):
    url, _server = start_daphne(PGAPPNAME=APPLICATION_NAME)
    cookie = f"sessionid={client_for(studio.users.annotator).cookies['sessionid'].value}"
    samples = f"/api/datasets/{studio.dataset.pk}/samples"
    assert get_repeatedly(url, samples, cookie, 1)[0][0] == 200

    counter = ConnectionCounter(APPLICATION_NAME)
    counter.start()
    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as clients:
        results = [result for client in clients.map(lambda _: get_repeatedly(url, samples, cookie, REQUESTS_PER_CLIENT),
                                                    range(CLIENTS)) for result in client]
    elapsed = time.perf_counter() - started
    most_connections = counter.stop()

    latencies = sorted(seconds for _status, seconds in results)
    print(f"\n{len(results)} GETs from {CLIENTS} clients in {elapsed:.1f} s ({len(results) / elapsed:.0f}/s): "
          f"p50 {statistics.median(latencies) * 1000:.0f} ms, p95 {percentile(latencies, 0.95) * 1000:.0f} "
          f"ms, max {latencies[-1] * 1000:.0f} ms; at most {most_connections} PostgreSQL connections "
          f"(pool max_size {settings.DATABASE_POOL_MAX_SIZE})")
    failed = [status for status, _seconds in results if status != 200]
    assert len(results) == CLIENTS * REQUESTS_PER_CLIENT and not failed, failed[:10]
    assert 0 < most_connections <= settings.DATABASE_POOL_MAX_SIZE
    assert get_repeatedly(url, "/api/me", cookie, 1)[0][0] == 200
