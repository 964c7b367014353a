"""Django settings for EditGAN Studio, read from the environment.

Out of the box everything lives on one machine: SQLite and media files under ``var/``, a Redis on localhost (the
``studio`` command starts one if none answers). A deployment sets ``DATABASE_URL``, ``REDIS_URL``,
``CELERY_BROKER_URL``, ``STORAGE_BACKEND=s3`` and friends; docs/deploy.md lists them all.
"""
from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("STUDIO_VAR_DIR", BASE_DIR / "var")).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)  # the default SQLite file, media, logs and a private Redis live here


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"environment variable {name}={value!r} is not a boolean: use 1/0, true/false or yes/no")


def _env_number(name: str, default, parse, kind: str):
    value = os.environ.get(name)
    try:
        return default if value is None else parse(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not {kind}") from None


def env_int(name: str, default: int) -> int:
    return _env_number(name, default, int, "an integer")


def env_float(name: str, default: float) -> float:
    return _env_number(name, default, float, "a number")


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    return default if value is None else [item.strip() for item in value.split(",") if item.strip()]


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated on first start and kept in var/ (laptop use)."""
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "webapp.accounts",
    "webapp.registry",
    "webapp.datasets",
    "webapp.editing",
    "webapp.jobs",
    "webapp.realtime",
    "webapp.studio",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "webapp.urls"
ASGI_APPLICATION = "webapp.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'studio.sqlite3'}")),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Workers, Daphne and the API write to one file: wait for the lock instead of failing with "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update({"timeout": 30, "transaction_mode": "IMMEDIATE"})
# Connections are closed after each request (CONN_MAX_AGE 0): under ASGI every request runs in a thread of its own, and
# persistent per-thread connections piled up until PostgreSQL refused new clients. On PostgreSQL each process keeps a
# bounded pool instead (docs/deploy.md, "Database connections"); DATABASE_POOL_MAX_SIZE=0 turns it off (PgBouncer).
DATABASE_POOL_MAX_SIZE = env_int("DATABASE_POOL_MAX_SIZE", 8)
if DATABASE_POOL_MAX_SIZE < 0:
    raise ValueError(f"DATABASE_POOL_MAX_SIZE must be ≥ 0 (0: no pool), got {DATABASE_POOL_MAX_SIZE}")
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and DATABASE_POOL_MAX_SIZE > 0:
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": min(env_int("DATABASE_POOL_MIN_SIZE", 1), DATABASE_POOL_MAX_SIZE),
        "max_size": DATABASE_POOL_MAX_SIZE,
        "timeout": env_float("DATABASE_POOL_TIMEOUT", 20),  # seconds a request waits for a free connection
    }
if os.environ.get("DATABASE_TEST_NAME"):
    # Tests whose Celery worker and Daphne run in other processes need the test database in a file they can open.
    DATABASES["default"]["TEST"] = {"NAME": os.environ["DATABASE_TEST_NAME"]}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/admin/login/"


def env_positive_int(name: str, default: int) -> int:
    value = env_int(name, default)
    if value < 1:
        raise ValueError(f"environment variable {name}={value} must be at least 1")
    return value


# Throttling, counted in the database so that every web process sees the same counts: failed logins per username
# and per client address, and token creations per user, within a sliding window; beyond it the API answers 429.
STUDIO_LOGIN_FAILURES_PER_USERNAME = env_positive_int("STUDIO_LOGIN_FAILURES_PER_USERNAME", 5)
STUDIO_LOGIN_FAILURES_PER_ADDRESS = env_positive_int("STUDIO_LOGIN_FAILURES_PER_ADDRESS", 20)
STUDIO_LOGIN_WINDOW_SECONDS = env_positive_int("STUDIO_LOGIN_WINDOW_SECONDS", 300)
STUDIO_TOKENS_PER_WINDOW = env_positive_int("STUDIO_TOKENS_PER_WINDOW", 10)
STUDIO_TOKEN_WINDOW_SECONDS = env_positive_int("STUDIO_TOKEN_WINDOW_SECONDS", 3600)
STUDIO_TOKEN_LIFETIME_DAYS = env_positive_int("STUDIO_TOKEN_LIFETIME_DAYS", 30)  # API tokens are refused after this

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "frontend"] if (BASE_DIR / "frontend").is_dir() else []
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))

STORAGE_BACKEND = os.environ.get("STORAGE_BACKEND", "local")
if STORAGE_BACKEND == "local":
    _default_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
elif STORAGE_BACKEND == "s3":
    # django-storages reads AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_S3_REGION_NAME from the environment.
    _default_storage = {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {
        "bucket_name": os.environ.get("AWS_STORAGE_BUCKET_NAME", ""),
        "endpoint_url": os.environ.get("AWS_S3_ENDPOINT_URL") or None,
        "location": os.environ.get("AWS_LOCATION", "studio"),
        "default_acl": None,
        "querystring_auth": True,
        "file_overwrite": False,
    }}
else:
    raise ValueError(f"STORAGE_BACKEND={STORAGE_BACKEND!r}: use 'local' (default) or 's3'")
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# --- Redis, channel layer, Celery -------------------------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
# Every Redis key the studio writes starts with this, so that several studios (or test sessions) share one Redis.
STUDIO_KEY_PREFIX = os.environ.get("STUDIO_KEY_PREFIX", "studio")
# Options of the asyncio Redis clients (the channel layer's, the annotation rooms'). No socket timeout: with one,
# redis-py wraps every write in asyncio.wait_for, and Python 3.11's wait_for swallows a cancellation that lands as
# the write completes. A closed websocket's receive loop (or presence renewal) then never ends: the consumer polls
# Redis forever and its socket never leaves its room. Keepalive finds a dead peer instead (idle 10 s, then a probe
# every 5 s, three missed: where the OS names these); channels_redis's blocking reads return every 5 s on their own.
ASYNC_REDIS_OPTIONS = {"socket_timeout": None, "socket_keepalive": True, "socket_keepalive_options": {
    getattr(socket, name): value for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
    if hasattr(socket, name)}}
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [{"address": REDIS_URL, **ASYNC_REDIS_OPTIONS}],
            "prefix": f"{STUDIO_KEY_PREFIX}:asgi", "capacity": 500, "expiry": 30,
        },
    },
}

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL)
CELERY_TASK_DEFAULT_QUEUE = "interactive"
CELERY_TASK_ACKS_LATE = True  # a task's message is acknowledged only when it ends ...
CELERY_TASK_REJECT_ON_WORKER_LOST = True  # ... and goes back to the queue when its worker dies
CELERY_WORKER_PREFETCH_MULTIPLIER = 1  # a busy GPU worker must not hoard messages another worker could run
CELERY_TASK_ALWAYS_EAGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Redis/SQS only: a message not acknowledged within this many seconds is handed out again (that is how a job whose
# worker machine died runs again). Keep it above the longest job; RabbitMQ redelivers on connection loss instead.
CELERY_VISIBILITY_TIMEOUT = env_int("CELERY_VISIBILITY_TIMEOUT", 4 * 3600)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_VISIBILITY_TIMEOUT,
    # How often a worker looks for messages whose worker vanished (scanning every time it looks).
    "unacked_restore_interval": env_int("CELERY_RESTORE_INTERVAL", 10),
    "unacked_restore_throttle": 1,
    "global_keyprefix": f"{STUDIO_KEY_PREFIX}:celery:",
}

# --- Studio ------------------------------------------------------------------------------------------------------
STUDIO_DEVICE = os.environ.get("STUDIO_DEVICE", "auto")  # auto | cpu | cuda | cuda:N (workers only)
# The precision of edit passes on a GPU worker (editor_core EditingModels.precision). The engine's own list
# (editor_core.editing._AUTOCAST_DTYPES) would import torch into the web process; a test keeps the two equal.
STUDIO_EDIT_PRECISION_CHOICES = ("float32", "bfloat16", "float16")
STUDIO_EDIT_PRECISION = os.environ.get("STUDIO_EDIT_PRECISION", "float32")
if STUDIO_EDIT_PRECISION not in STUDIO_EDIT_PRECISION_CHOICES:
    raise ValueError(f"STUDIO_EDIT_PRECISION={STUDIO_EDIT_PRECISION!r}: use one of "
                     f"{', '.join(STUDIO_EDIT_PRECISION_CHOICES)}")
# Workers: run edit and embedding passes through torch.compile in this mode (editor_core.compiled; "" = eager).
# Each network compiles once per input shape (a minute or more), then runs faster: docs/benchmarks.md. An interactive
# worker's pool process compiles the active branches' edit passes before it takes work (gpu_worker.warm_up).
STUDIO_EDIT_COMPILE_CHOICES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")
STUDIO_EDIT_COMPILE = os.environ.get("STUDIO_EDIT_COMPILE", "")
if STUDIO_EDIT_COMPILE and STUDIO_EDIT_COMPILE not in STUDIO_EDIT_COMPILE_CHOICES:
    raise ValueError(f"STUDIO_EDIT_COMPILE={STUDIO_EDIT_COMPILE!r}: use one of "
                     f"{', '.join(STUDIO_EDIT_COMPILE_CHOICES)}, or leave it empty (eager)")
# How long a pool process that replaces one that died may take to start before its worker kills it (Celery's
# default: 4 s; a worker's first processes are not timed): with STUDIO_EDIT_COMPILE that start is the warm-up.
CELERY_WORKER_PROC_ALIVE_TIMEOUT = env_positive_int("STUDIO_WARM_UP_TIMEOUT", 1800) if STUDIO_EDIT_COMPILE else 4.0
# Workers: where torch.compile keeps what it built (Inductor's graph and autograd caches with their kernels), for
# every worker on this machine. torch's default is under /tmp, which a container's restart or a reboot empties; kept
# here, a restarted worker's warm-up loads its graphs instead of compiling them (CPU: 130 s cold, 13 s from the cache).
STUDIO_COMPILE_CACHE_DIR = Path(os.environ.get("STUDIO_COMPILE_CACHE_DIR", VAR_DIR / "compile-cache")).resolve()
# Workers: evaluate the segmentation branch at an edit's ROI pixels this many at a time, recomputing each chunk in
# backward (editor_core EditingModels.roi_pixel_chunk), so a large 512² edit fits a small card; 0 = all at once
STUDIO_EDIT_ROI_CHUNK = env_int("STUDIO_EDIT_ROI_CHUNK", 0)
if STUDIO_EDIT_ROI_CHUNK < 0:
    raise ValueError(f"STUDIO_EDIT_ROI_CHUNK must be ≥ 0 (0 = no chunking), got {STUDIO_EDIT_ROI_CHUNK}")
# Interactive speed on a CPU worker (docs/benchmarks.md, "CPU — issue 17", has the quality each costs). "auto" / 0
# means: the value below on a CPU, the exact release computation (LPIPS-VGG, every ensemble member) on a GPU.
STUDIO_EDIT_LPIPS = os.environ.get("STUDIO_EDIT_LPIPS", "auto")  # auto | vgg | alex: edits' and embeddings' LPIPS
if STUDIO_EDIT_LPIPS not in ("auto", "vgg", "alex"):
    raise ValueError(f"STUDIO_EDIT_LPIPS={STUDIO_EDIT_LPIPS!r}: use auto, vgg or alex")
STUDIO_EDIT_LOSS_MEMBERS = env_int("STUDIO_EDIT_LOSS_MEMBERS", 0)  # ensemble members in modes 2/3's loss; 0 = auto
STUDIO_MODE1_MASK_MEMBERS = env_int("STUDIO_MODE1_MASK_MEMBERS", 0)  # ensemble members for a mode-1 mask; 0 = auto
STUDIO_EMBED_STEPS = env_int("STUDIO_EMBED_STEPS", 0)  # embedding steps when a request names none; 0 = auto
if min(STUDIO_EDIT_LOSS_MEMBERS, STUDIO_MODE1_MASK_MEMBERS, STUDIO_EMBED_STEPS) < 0:
    raise ValueError("STUDIO_EDIT_LOSS_MEMBERS, STUDIO_MODE1_MASK_MEMBERS and STUDIO_EMBED_STEPS must be ≥ 0 "
                     "(0 = auto)")
# Training workers keep every sample's generator features for a segmentation retraining when they fit in this many
# MiB (on the training device), instead of synthesising each step's samples again: at 512² config-f, 16 samples take
# 1.92 GiB and the retraining 18 s instead of 61 s on an H100 (docs/benchmarks.md); 0 = never keep them
STUDIO_SEG_FEATURE_CACHE_MB = env_int("STUDIO_SEG_FEATURE_CACHE_MB", 4096)
if STUDIO_SEG_FEATURE_CACHE_MB < 0:
    raise ValueError(f"STUDIO_SEG_FEATURE_CACHE_MB must be ≥ 0 (0 = no cache), got {STUDIO_SEG_FEATURE_CACHE_MB}")
# CPU workers that consume only background queues (training) run at this lower priority (os.nice increment,
# 0 = unchanged) so the web server and the interactive worker stay responsive
STUDIO_CPU_WORKER_NICE = env_int("STUDIO_CPU_WORKER_NICE", 10)
if not 0 <= STUDIO_CPU_WORKER_NICE <= 19:
    raise ValueError(f"STUDIO_CPU_WORKER_NICE must be 0..19 (an os.nice increment), got {STUDIO_CPU_WORKER_NICE}")
# Torch threads of each worker process (0 = torch's default, one per core); manage.py studio sets it per worker
STUDIO_WORKER_THREADS = env_int("STUDIO_WORKER_THREADS", 0)
if STUDIO_WORKER_THREADS < 0:
    raise ValueError(f"STUDIO_WORKER_THREADS must be ≥ 0 (0 = torch's default), got {STUDIO_WORKER_THREADS}")
STUDIO_MAX_UPLOAD_BYTES = env_int("STUDIO_MAX_UPLOAD_BYTES", 20 * 1024 * 1024)
STUDIO_MAX_UPLOAD_PIXELS = env_int("STUDIO_MAX_UPLOAD_PIXELS", 40_000_000)
STUDIO_MAX_CHECKPOINT_BYTES = env_int("STUDIO_MAX_CHECKPOINT_BYTES", 2 * 1024 ** 3)
# Server paths that admins may import checkpoints from (never the whole file system).
STUDIO_IMPORT_ROOTS = [Path(p) for p in env_list("STUDIO_IMPORT_ROOTS", [str(VAR_DIR / "import"),
                                                                         str(BASE_DIR / "demo")])]
STUDIO_MAX_QUEUED_JOBS_PER_USER = env_int("STUDIO_MAX_QUEUED_JOBS_PER_USER", 4)  # expensive kinds only
STUDIO_INTERACTIVE_TIME_LIMIT = env_int("STUDIO_INTERACTIVE_TIME_LIMIT", 600)
STUDIO_TRAINING_TIME_LIMIT = env_int("STUDIO_TRAINING_TIME_LIMIT", 12 * 3600)
STUDIO_JOB_HEARTBEAT_SECONDS = 0.25  # a running job writes its heartbeat and reads its cancel flag this often
# A running job whose heartbeat is older than this lost its worker: it is queued again (attempts left) or failed.
# 40 heartbeats: a niced CPU worker on a busy laptop, or a SQLite write lock held by a save, can delay several.
STUDIO_JOB_STALE_SECONDS = env_float("STUDIO_JOB_STALE_SECONDS", 10.0)
STUDIO_JOB_MAX_ATTEMPTS = env_int("STUDIO_JOB_MAX_ATTEMPTS", 3)  # starts of one job before a lost one is failed
if not 4 * STUDIO_JOB_HEARTBEAT_SECONDS <= STUDIO_JOB_STALE_SECONDS < float("inf"):
    raise ValueError(f"STUDIO_JOB_STALE_SECONDS={STUDIO_JOB_STALE_SECONDS} must be at least four heartbeats "
                     f"({4 * STUDIO_JOB_HEARTBEAT_SECONDS} s)")
if STUDIO_JOB_MAX_ATTEMPTS < 1:
    raise ValueError(f"STUDIO_JOB_MAX_ATTEMPTS={STUDIO_JOB_MAX_ATTEMPTS} must be at least 1")
STUDIO_PROGRESS_DB_SECONDS = 1.0  # progress reaches the database at most this often (the channel layer: always)
STUDIO_AUTOSAVE_SECONDS = env_int("STUDIO_AUTOSAVE_SECONDS", 1)  # live strokes reach the database within 2 s
STUDIO_MODE1_MAX_BATCH = env_int("STUDIO_MODE1_MAX_BATCH", 16)
# A slider position sent on a live-apply socket (ws/apply/<sample>/) that no worker has answered after this long is
# answered with an error (its worker died, or the interactive queue is that far behind), and the socket sends the next.
STUDIO_LIVE_APPLY_TIMEOUT_SECONDS = env_float("STUDIO_LIVE_APPLY_TIMEOUT_SECONDS", 60.0)
if not 0 < STUDIO_LIVE_APPLY_TIMEOUT_SECONDS < float("inf"):
    raise ValueError(f"STUDIO_LIVE_APPLY_TIMEOUT_SECONDS={STUDIO_LIVE_APPLY_TIMEOUT_SECONDS} must be a positive "
                     "number of seconds")
# Live-apply answers are previews (the library shows them in a 260-pixel box): a picture larger than this many pixels on
# its longer side is scaled down before its JPEG (1024² → 512²: 3.8× fewer bytes a slider move); 0 = full size
STUDIO_LIVE_APPLY_MAX_SIZE = env_int("STUDIO_LIVE_APPLY_MAX_SIZE", 512)
if STUDIO_LIVE_APPLY_MAX_SIZE < 0:
    raise ValueError(f"STUDIO_LIVE_APPLY_MAX_SIZE must be ≥ 0 (0 = full size), got {STUDIO_LIVE_APPLY_MAX_SIZE}")
# A live annotation room lists a user while the Daphne process holding their socket renews the entry (every third of
# this); a crashed Daphne renews nothing, so its users drop out of every room within this + a third of it.
STUDIO_PRESENCE_TTL_SECONDS = env_float("STUDIO_PRESENCE_TTL_SECONDS", 30.0)
if not 0 < STUDIO_PRESENCE_TTL_SECONDS < float("inf"):
    raise ValueError(f"STUDIO_PRESENCE_TTL_SECONDS={STUDIO_PRESENCE_TTL_SECONDS} must be a positive number of seconds")

DATA_UPLOAD_MAX_MEMORY_SIZE = STUDIO_MAX_UPLOAD_BYTES + 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}
