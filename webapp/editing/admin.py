from django.contrib import admin

from webapp.editing.models import Composition, CompositionItem, EditResult, EditSession, EditVector


@admin.register(EditSession)
class EditSessionAdmin(admin.ModelAdmin):
    list_display = ("id", "sample", "mode", "user", "job", "created")
    list_filter = ("mode",)


@admin.register(EditResult)
class EditResultAdmin(admin.ModelAdmin):
    list_display = ("session", "created")


@admin.register(EditVector)
class EditVectorAdmin(admin.ModelAdmin):
    list_display = ("name", "generator", "author", "scale_min", "scale_max", "created")
    search_fields = ("name", "description")


class CompositionItemInline(admin.TabularInline):
    model = CompositionItem
    extra = 0


@admin.register(Composition)
class CompositionAdmin(admin.ModelAdmin):
    list_display = ("name", "generator", "author", "created")
    inlines = [CompositionItemInline]
