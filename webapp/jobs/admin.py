from django.contrib import admin

from webapp.jobs.models import Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "queue", "status", "progress", "requested_by", "attempts", "created", "finished")
    list_filter = ("kind", "status", "queue")
    readonly_fields = [f.name for f in Job._meta.fields if f.name not in ("cancel_requested",)]
