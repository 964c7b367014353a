"""``manage.py purge_files``: the stored files no row refers to, listed, then deleted when asked."""
from __future__ import annotations

import os
import time
from io import StringIO

import pytest
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command

from webapp.storage import save_bytes


def purge(*args: str) -> str:
    out = StringIO()
    call_command("purge_files", *args, stdout=out)
    return out.getvalue()


def age(name: str, hours: float) -> None:
    then = time.time() - hours * 3600
    os.utime(default_storage.path(name), (then, then))


def test_purge_lists_then_deletes_only_old_files_that_no_row_refers_to(shared_studio):
    from webapp.datasets.services import delete_sample

    sample = shared_studio.samples[3]
    deleted_image, kept_image = sample.image.name, shared_studio.samples[0].image.name
    delete_sample(sample)
    fresh_orphan = save_bytes("purge-test/fresh.bin", b"x" * 10)
    for name in (deleted_image, kept_image):
        age(name, 48)  # both old; only the deleted sample's image lost its row

    listed = purge("--older-than", "24")
    assert deleted_image in listed and kept_image not in listed and fresh_orphan not in listed
    assert default_storage.exists(deleted_image)  # listing deletes nothing
    assert "--delete removes them" in listed

    removed = purge("--older-than", "24", "--delete")
    assert "deleted  " in removed and deleted_image in removed
    assert not default_storage.exists(deleted_image)
    assert default_storage.exists(kept_image) and default_storage.exists(fresh_orphan)
    assert shared_studio.samples[0].image.name == kept_image
    default_storage.delete(fresh_orphan)


@pytest.mark.parametrize("hours", ["-1", "nan"])
def test_purge_refuses_a_negative_or_unknown_age(db, hours):
    with pytest.raises(CommandError, match="--older-than must be a number of hours"):
        purge("--older-than", hours)
