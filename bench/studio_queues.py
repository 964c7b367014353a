"""A person's job while background work runs, through the real studio: ``manage.py studio`` on a fresh var/ and a
free port, driven over its HTTP API as the browser does. Times one-sample "Random sample" jobs (start delay =
started - created, run time = finished - started, from the job rows) in three phases: right after start-up, while
the demo's ranking runs; on the idle studio; and while a segmentation retraining with the admin page's defaults
runs (cancelled once they are done).

    python -m bench.studio_queues [--bundle demo] [--jobs 5] [--json out.json]

Uses the Redis at REDIS_URL, or starts a private one like the studio does. ``StudioApi`` and ``start_studio`` are
also the test suite's way into a running studio (tests/webapp/test_web_studio_processes.py).
"""
from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench import emit_report  # noqa: E402
from webapp.studio import processes  # noqa: E402  (standard library only)

FINISHED = ("succeeded", "failed", "cancelled")
ADMIN_PASSWORD = "bench-admin-pass"


class StudioApi:
    """The studio's HTTP API as a browser uses it: session cookie, CSRF header on unsafe requests."""

    def __init__(self, base_url: str, username: str, password: str):
        self.base_url, self.cookies = base_url, http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))
        self.call("GET", "/api/auth/csrf")
        self.call("POST", "/api/auth/login", {"username": username, "password": password})

    def cookie(self, name: str) -> str:
        return next(cookie.value for cookie in self.cookies if cookie.name == name)

    def call(self, method: str, path: str, body=None, timeout: float = 30):
        request = urllib.request.Request(self.base_url + path, method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json", "Referer": self.base_url})
        if method != "GET":
            request.add_header("X-CSRFToken", self.cookie("csrftoken"))
        with self.opener.open(request, timeout=timeout) as response:
            return json.loads(response.read() or b"null")

    def get_bytes(self, path: str, timeout: float = 30) -> bytes:
        """The body of a GET (an image, a file the API hands out)."""
        with self.opener.open(self.base_url + path, timeout=timeout) as response:
            return response.read()

    def wait_for_job(self, job_id: int, statuses=FINISHED, timeout: float = 240) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.call("GET", f"/api/jobs/{job_id}")
            if job["status"] in statuses:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout} s: {job}")
            time.sleep(0.1)

    def dataset(self, name: str) -> dict:
        return next(dataset for dataset in self.call("GET", "/api/datasets") if dataset["name"] == name)

    def generate_sample(self, dataset: dict) -> dict:
        return self.call("POST", f"/api/datasets/{dataset['id']}/samples/generate", {"count": 1})


def start_studio(folder: Path, bundle: Optional[Path], env: dict,
                 password: str) -> tuple[processes.ManagedProcess, StudioApi]:
    """``manage.py studio`` (var/ from ``env``'s STUDIO_VAR_DIR; ``bundle`` None: ``--no-demo``) on a free port, its
    log in ``folder``; returns it once it serves, with its API logged in as the first admin (``env`` must set
    STUDIO_ADMIN_PASSWORD=password)."""
    port = processes.free_port()
    studio = processes.ManagedProcess(
        "manage.py studio", [sys.executable, "manage.py", "studio", "--port", str(port)]
        + (["--bundle", str(bundle)] if bundle else ["--no-demo"]),
        folder / "studio.log", env=env, cwd=REPO).start()
    try:
        studio.wait_for_log("EditGAN Studio is running", timeout=600)
        return studio, StudioApi(f"http://127.0.0.1:{port}", "admin", password)
    except BaseException:
        studio.stop(timeout=120)
        raise


def job_times(job: dict) -> tuple[Optional[float], Optional[float]]:
    """``(start delay, run time)`` in seconds of a job (the API's row); None for a span it has not finished."""
    created, started, finished = (datetime.fromisoformat(job[key]) if job.get(key) else None
                                  for key in ("created", "started", "finished"))
    delay = (started - created).total_seconds() if created and started else None
    return delay, (finished - started).total_seconds() if started and finished else None


def sample_jobs(api: StudioApi, dataset: dict, count: int) -> list[tuple[float, float]]:
    times = []
    for _ in range(count):
        job = api.wait_for_job(api.generate_sample(dataset)["id"], timeout=600)
        if job["status"] != "succeeded":
            raise RuntimeError(f"sample job failed: {job}")
        times.append(job_times(job))
    return times


def wait_until_idle(api: StudioApi, timeout: float = 1800) -> None:
    """Until no job is queued or running (the demo's start-up ranking and thumbnails)."""
    deadline = time.monotonic() + timeout
    while any(job["status"] not in FINISHED for job in api.call("GET", "/api/jobs")):
        if time.monotonic() > deadline:
            raise TimeoutError("jobs still queued or running")
        time.sleep(1)


def running(api: StudioApi, job: dict) -> bool:
    return api.call("GET", f"/api/jobs/{job['id']}")["status"] == "running"


def summary(times: list[tuple[float, float]]) -> dict:
    delays, runs = zip(*times)
    return {"start_delay_s": {"median": statistics.median(delays), "max": max(delays)},
            "run_s": {"median": statistics.median(runs), "max": max(runs)}, "jobs": len(times)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "demo")
    parser.add_argument("--jobs", type=int, default=5, help="sample jobs timed in each phase")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="studio-queues-"))
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "STUDIO_VAR_DIR")}
    env.update(STUDIO_VAR_DIR=str(folder / "var"), STUDIO_ADMIN_PASSWORD=ADMIN_PASSWORD,
               STUDIO_KEY_PREFIX=f"bench-queues-{os.getpid()}")
    studio, api = start_studio(folder, args.bundle, env, ADMIN_PASSWORD)
    report = {"date": time.strftime("%Y-%m-%d"), "cores": processes.cpu_cores(), "bundle": str(args.bundle)}
    try:
        demo = api.dataset("demo")
        ranking = next(job for job in api.call("GET", "/api/jobs") if job["kind"] == "rank")
        report["during_startup_ranking"] = summary(sample_jobs(api, demo, args.jobs))
        report["during_startup_ranking"]["ranking_still_running"] = running(api, ranking)
        wait_until_idle(api)
        report["idle"] = summary(sample_jobs(api, demo, args.jobs))
        training = api.call("POST", "/api/train/segmentation", {"dataset_id": demo["id"], "steps": 300,
                                                                "activate": False})
        api.wait_for_job(training["id"], statuses=("running",) + FINISHED, timeout=600)
        try:
            report["during_retraining"] = summary(sample_jobs(api, demo, args.jobs))
            report["during_retraining"]["retraining_still_running"] = running(api, training)
        finally:
            api.call("POST", f"/api/jobs/{training['id']}/cancel")
    finally:
        studio.stop(timeout=120)
    emit_report(report, args.json)
    return report


if __name__ == "__main__":
    main()
