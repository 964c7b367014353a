from django.contrib import admin

from webapp.registry.models import Checkpoint


@admin.register(Checkpoint)
class CheckpointAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "generator", "active", "source_format", "created")
    list_filter = ("kind", "active", "source_format")
    readonly_fields = ("sha256", "fingerprint", "file", "config", "created")
    search_fields = ("name", "fingerprint")
