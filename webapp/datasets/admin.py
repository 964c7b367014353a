from django.contrib import admin

from webapp.datasets.models import (Annotation, AnnotationRevision, Dataset, LabelClass, LabelSchema, Sample,
                                     SamplePrediction)


class LabelClassInline(admin.TabularInline):
    model = LabelClass
    extra = 0


@admin.register(LabelSchema)
class LabelSchemaAdmin(admin.ModelAdmin):
    list_display = ("name", "num_classes", "created")
    inlines = [LabelClassInline]


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ("name", "schema", "generator", "created_by", "created")
    search_fields = ("name",)


@admin.register(Sample)
class SampleAdmin(admin.ModelAdmin):
    list_display = ("id", "dataset", "source", "seed", "uncertainty", "created")
    list_filter = ("dataset", "source")


class RevisionInline(admin.TabularInline):
    model = AnnotationRevision
    extra = 0
    can_delete = False
    readonly_fields = ("version", "status", "reason", "author", "mask", "note", "created")

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Annotation)
class AnnotationAdmin(admin.ModelAdmin):
    """Read-only here: every change goes through the services so that it leaves a revision."""

    list_display = ("sample", "version", "status", "author", "updated")
    list_filter = ("status",)
    readonly_fields = ("sample", "version", "status", "author", "mask", "updated")
    inlines = [RevisionInline]

    def has_add_permission(self, request):
        return False


@admin.register(AnnotationRevision)
class AnnotationRevisionAdmin(admin.ModelAdmin):
    list_display = ("annotation", "version", "status", "reason", "author", "created")
    readonly_fields = [f.name for f in AnnotationRevision._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(SamplePrediction)
class SamplePredictionAdmin(admin.ModelAdmin):
    """Read-only: workers write predictions when they run a segmentation branch on a sample."""

    list_display = ("sample", "segmentation", "score", "updated")
    list_filter = ("segmentation",)
    readonly_fields = [f.name for f in SamplePrediction._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
