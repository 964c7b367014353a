"""Login throttling across real web processes: the counts live in the database, not in a process."""
from __future__ import annotations

import http.cookiejar
import json
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def test_two_web_processes_share_the_login_count(users, daphne_url, start_daphne):
    """Counts live in the database: failures spread over two Daphne processes add up."""
    other_url, _ = start_daphne()
    limit = 5  # the default STUDIO_LOGIN_FAILURES_PER_USERNAME both processes run with

    def attempt(url: str) -> tuple[int, dict]:
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        csrf = json.load(opener.open(f"{url}/api/auth/csrf"))["csrftoken"]
        request = urllib.request.Request(f"{url}/api/auth/login", method="POST", data=json.dumps(
            {"username": "ann", "password": "wrong"}).encode(), headers={
            "Content-Type": "application/json", "X-CSRFToken": csrf, "Referer": url})
        try:
            with opener.open(request) as response:
                return response.status, {}
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers)

    answers = [attempt((daphne_url, other_url)[k % 2]) for k in range(limit + 2)]  # turn about
    assert [status for status, _ in answers] == [401] * limit + [429, 429]
    assert all(int(headers["Retry-After"]) > 0 for _, headers in answers[limit:])
