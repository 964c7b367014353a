"""The Celery app. Queues: ``interactive`` (edits, embedding one image, pre-labels, samples) and ``training``
(segmentation branch, ranking, encoder). Run one worker per GPU::

    CUDA_VISIBLE_DEVICES=0 celery -A gpu_worker.celery_app worker -Q interactive,training -c 1 -n gpu0@%h

Configuration comes from Django settings (``CELERY_*``): broker, acks_late, reject-on-worker-lost, prefetch 1.
"""
import os

from celery import Celery
from celery.signals import worker_init
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("editgan_studio", include=["gpu_worker.tasks", "gpu_worker.sweeper"])
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = tuple(Queue(name, Exchange(name, type="direct"), routing_key=name)
                             for name in ("interactive", "training"))
app.conf.worker_hijack_root_logger = False


@worker_init.connect
def _yield_the_cpu_to_the_web_server(**_kwargs) -> None:
    """A CPU worker usually shares its machine with Daphne (``manage.py studio`` on a laptop): at normal priority its
    tensor work (a ranking, a retraining) starves the web server, and live saves and API calls stall for seconds.
    Lowering the worker's priority by ``STUDIO_CPU_WORKER_NICE`` keeps the studio responsive and costs the worker
    nothing when the web server is idle. GPU workers keep their priority. The pool's processes inherit it."""
    from django.conf import settings

    from gpu_worker.engine_cache import device

    if device().type == "cpu" and settings.STUDIO_CPU_WORKER_NICE:
        os.nice(settings.STUDIO_CPU_WORKER_NICE)
