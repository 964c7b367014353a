from django.apps import AppConfig


class EditingConfig(AppConfig):
    name = "webapp.editing"
    label = "editing"

    def ready(self) -> None:
        from webapp.editing.services import follow_retry
        from webapp.jobs.signals import job_retried

        job_retried.connect(follow_retry, dispatch_uid="webapp.editing.follow_retry")
