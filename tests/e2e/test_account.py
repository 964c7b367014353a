"""End-to-end: the account page lists, creates and revokes API tokens (issue 16), in real Chromium."""
from __future__ import annotations

import pytest

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]


def test_account_page_creates_lists_and_revokes_tokens(open_as, live_studio, screenshot):
    from django.test import Client

    page = open_as("ann", "/account")
    view = page.locator(".account-view")
    view.get_by_text("You have no API tokens.").wait_for()
    view.get_by_label("Token name").fill("nightly export")
    view.get_by_role("button", name="Create token").click()
    key = view.locator(".new-key code.key")
    key.wait_for()
    script = Client(HTTP_AUTHORIZATION=f"Bearer {key.inner_text().strip()}")
    assert script.get("/api/me").json()["username"] == "ann"
    row = view.locator("table.data tr", has_text="nightly export")
    row.locator(".badge", has_text="active").wait_for()
    assert "never" in row.inner_text()  # listed before the script used it
    screenshot(page, "account_tokens")
    row.get_by_role("button", name="Revoke").click()
    row.locator(".badge", has_text="revoked").wait_for()
    assert "never" not in row.inner_text()  # the list, read again, shows when the script last used it
    refused = script.get("/api/me")
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
