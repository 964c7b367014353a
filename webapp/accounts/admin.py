from django.contrib import admin

from webapp.accounts.models import ApiToken, ThrottleEvent


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "prefix", "created", "last_used", "expires", "revoked")
    readonly_fields = ("prefix", "created", "last_used")
    search_fields = ("name", "user__username")


@admin.register(ThrottleEvent)
class ThrottleEventAdmin(admin.ModelAdmin):
    list_display = ("scope", "key", "created")
    list_filter = ("scope",)
    search_fields = ("key",)
