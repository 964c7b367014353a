from django.apps import AppConfig
from django.db.models.signals import post_migrate


class StudioConfig(AppConfig):
    name = "webapp.studio"
    label = "studio"

    def ready(self) -> None:
        from webapp.accounts.roles import ensure_role_groups

        # This app is the last in INSTALLED_APPS: when its post_migrate arrives, every app's permissions exist,
        # so the role groups can be (re)built with all of them.
        post_migrate.connect(ensure_role_groups, sender=self, dispatch_uid="webapp.studio.ensure_role_groups")
