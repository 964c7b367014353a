"""The Celery app. Queues: ``interactive`` (edits, embedding one image, pre-labels, samples, vector thumbnails,
segmenting a sample: a person waits for them) and ``training`` (segmentation branch, ranking, encoder, checkpoint
import; ``webapp.jobs.services.QUEUE_OF_KIND`` routes each kind). ``manage.py studio`` runs one worker per queue;
docs/deploy.md has the production units::

    celery -A gpu_worker.celery_app worker -Q interactive -c 1 -n interactive@%h
    celery -A gpu_worker.celery_app worker -Q training -c 1 -n training@%h

Configuration comes from Django settings (``CELERY_*``): broker, acks_late, reject-on-worker-lost, prefetch 1.
"""
import logging
import os

from celery import Celery
from celery.signals import worker_init, worker_process_init
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("editgan_studio", include=["gpu_worker.tasks", "gpu_worker.sweeper"])
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = tuple(Queue(name, Exchange(name, type="direct"), routing_key=name)
                             for name in ("interactive", "training"))
app.conf.worker_hijack_root_logger = False


@worker_init.connect
def _yield_the_cpu_to_people(sender, **_kwargs) -> None:
    """A CPU worker usually shares its machine with Daphne and the interactive worker (``manage.py studio`` on a
    laptop): at normal priority a training worker's tensor work (a ranking, a retraining) starves them, and live
    saves, API calls and previews stall for seconds. A CPU worker that consumes only background queues therefore
    lowers its priority by ``STUDIO_CPU_WORKER_NICE``, which costs it nothing while the others are idle. A worker
    that serves ``interactive`` keeps the web server's priority (someone waits for its jobs), and so do GPU
    workers. The pool's processes inherit the priority."""
    from django.conf import settings

    from gpu_worker.engine_cache import device

    serves_people = "interactive" in sender.app.amqp.queues.consume_from
    if device().type == "cpu" and not serves_people and settings.STUDIO_CPU_WORKER_NICE:
        os.nice(settings.STUDIO_CPU_WORKER_NICE)


@worker_init.connect
def _keep_compiled_graphs(**_kwargs) -> None:
    """With ``STUDIO_EDIT_COMPILE``, torch.compile's cache in ``STUDIO_COMPILE_CACHE_DIR``, set before the pool forks
    so that its processes inherit it. Set, not defaulted: importing ``torch._dynamo`` has already put torch's default
    in the environment. A folder that cannot be written is logged, and compiling goes on in torch's default."""
    from django.conf import settings

    if not settings.STUDIO_EDIT_COMPILE:
        return
    folder = settings.STUDIO_COMPILE_CACHE_DIR
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError("not writable")
    except OSError as error:
        logging.getLogger(__name__).error(
            "STUDIO_COMPILE_CACHE_DIR=%s cannot hold the compiled graphs (%s): they go to %s instead, which a restart "
            "may empty", folder, error, os.environ.get("TORCHINDUCTOR_CACHE_DIR", "torch's default"))
        return
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)


@worker_init.connect
def _compile_before_serving_people(sender, **_kwargs) -> None:
    """With ``STUDIO_EDIT_COMPILE``, each pool process of a worker that serves ``interactive`` compiles the edit
    passes of the active branches before it takes work (``warm_up``; ``CELERY_WORKER_PROC_ALIVE_TIMEOUT`` gives a
    process that replaces a dead one the time). Connected here, after Celery's Django fixup has connected its own
    process-init handler, so the database connections a process inherits are closed before the warm-up reads."""
    from django.conf import settings

    if settings.STUDIO_EDIT_COMPILE and "interactive" in sender.app.amqp.queues.consume_from:
        worker_process_init.connect(_warm_up, weak=False)


def _warm_up(**_kwargs) -> None:
    from gpu_worker.warm_up import warm_up_active_branches

    warm_up_active_branches()


@worker_process_init.connect
def _use_the_planned_threads(**_kwargs) -> None:
    """``STUDIO_WORKER_THREADS`` torch threads in each pool process (``manage.py studio`` splits the cores between
    its workers so that two of them do not oversubscribe a small machine); 0 leaves torch's default."""
    from django.conf import settings

    if settings.STUDIO_WORKER_THREADS:
        import torch

        torch.set_num_threads(settings.STUDIO_WORKER_THREADS)


@worker_process_init.connect
def _use_tensor_cores(**_kwargs) -> None:
    """A GPU worker's float32 matrix products on TF32 tensor cores, as cuDNN's convolutions already are by torch's
    default and as ``bench/gpu.py`` times the engine. Set before the warm-up, since a compiled graph keeps the choice;
    a CPU worker's precision is left alone."""
    from gpu_worker.engine_cache import device

    if device().type == "cuda":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = True


@worker_process_init.connect
def _publish_on_one_loop(**_kwargs) -> None:
    """Job events leave on one event loop per pool process: one Redis connection, not one per message."""
    from webapp.realtime.groups import publish_from_one_loop

    publish_from_one_loop()
