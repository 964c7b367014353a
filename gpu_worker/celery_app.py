"""The Celery app. Queues: ``interactive`` (edits, embedding one image, pre-labels, samples) and ``training``
(segmentation branch, ranking, encoder). Run one worker per GPU::

    CUDA_VISIBLE_DEVICES=0 celery -A gpu_worker.celery_app worker -Q interactive,training -c 1 -n gpu0@%h

Configuration comes from Django settings (``CELERY_*``): broker, acks_late, reject-on-worker-lost, prefetch 1.
"""
import os

from celery import Celery
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("editgan_studio", include=["gpu_worker.tasks"])
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = tuple(Queue(name, Exchange(name, type="direct"), routing_key=name)
                             for name in ("interactive", "training"))
app.conf.worker_hijack_root_logger = False
