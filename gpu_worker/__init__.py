"""Celery workers: thin tasks that adapt jobs to the engine (editor_core)."""
