"""``python manage.py purge_files``: list, then with ``--delete`` remove, the stored files that no row refers to.

Deleting a sample, a vector or a checkpoint keeps its files, and re-embedding keeps the replaced latent (a queued job
may still read it); this is where an admin reclaims that space, on local media or S3 alike.
"""
from __future__ import annotations

import datetime as dt

from django.core.management.base import BaseCommand, CommandError

from webapp.storage import delete_quietly, unreferenced_files


class Command(BaseCommand):
    help = "List the stored files that no row refers to; --delete removes them."

    def add_arguments(self, parser):
        parser.add_argument("--older-than", type=float, default=24.0, metavar="HOURS",
                            help="only files last written more than HOURS ago (default 24: an upload's file is "
                                 "stored before its row commits, and a queued job may still read a replaced one)")
        parser.add_argument("--delete", action="store_true", help="delete them (without it, only list them)")

    def handle(self, *args, older_than: float, delete: bool, **options):
        if not older_than >= 0:
            raise CommandError(f"--older-than must be a number of hours ≥ 0, got {older_than}")
        count = total = 0
        for name, size in unreferenced_files(dt.timedelta(hours=older_than)):
            if delete:
                delete_quietly(name)
            self.stdout.write(f"{'deleted' if delete else 'unreferenced'}  {size:>12,}  {name}")
            count, total = count + 1, total + size
        summary = f"{count} files, {total:,} bytes, no row refers to them (last written over {older_than:g} h ago)"
        self.stdout.write(f"deleted {summary}" if delete else f"{summary}; --delete removes them")
