from django.dispatch import Signal

# Sent by jobs.services.retry with ``old`` and ``new`` jobs, so that rows pointing at a job can follow its retry.
job_retried = Signal()
