"""The three studio roles as Django groups, and what each may do (permission codenames).

annotator: paints and submits part masks, asks for model pre-labels.
artist:    uploads and embeds images, runs edits (modes 1–3), keeps the vector library and compositions.
admin:     everything, including review, retraining, checkpoint import/activation, deletion and user management.
Everyone with a role may read datasets, samples, annotations, checkpoints, vectors and their own jobs.
"""
from __future__ import annotations

from django.contrib.auth.models import Group, Permission

ANNOTATOR, ARTIST, ADMIN = "annotator", "artist", "admin"
ROLES = (ANNOTATOR, ARTIST, ADMIN)

# What any role may read.
VIEW = "datasets.view_dataset"
ANNOTATE = "datasets.annotate"
REVIEW = "datasets.review_annotation"
MANAGE_DATASETS = "datasets.manage_dataset"
UPLOAD = "datasets.add_sample"
EDIT_IMAGES = "editing.run_edit"
MANAGE_MODELS = "registry.manage_models"
VIEW_ALL_JOBS = "jobs.view_all_jobs"
VIEW_CHECKPOINTS = "registry.view_checkpoint"
VIEW_VECTORS = "editing.view_editvector"

_READ = [VIEW, "datasets.view_sample", "datasets.view_annotation", VIEW_CHECKPOINTS,
         VIEW_VECTORS, "editing.view_composition", "jobs.view_job"]
ROLE_PERMISSIONS: dict[str, list[str]] = {
    ANNOTATOR: _READ + [ANNOTATE],
    ARTIST: _READ + [UPLOAD, EDIT_IMAGES, "editing.add_editvector", "editing.change_editvector",
                     "editing.delete_editvector", "editing.add_composition", "editing.delete_composition"],
    ADMIN: None,  # every permission of the studio's apps, see below
}
STUDIO_APPS = ("accounts", "datasets", "registry", "editing", "jobs")


def _permissions(codenames: list[str]) -> list[Permission]:
    found = []
    for dotted in codenames:
        app_label, codename = dotted.split(".")
        found.append(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return found


def ensure_role_groups(**_kwargs) -> None:
    """Create or update the role groups. Idempotent; runs after every ``migrate``."""
    for role in ROLES:
        group, _ = Group.objects.get_or_create(name=role)
        if ROLE_PERMISSIONS[role] is None:
            perms = list(Permission.objects.filter(content_type__app_label__in=STUDIO_APPS))
        else:
            perms = _permissions(ROLE_PERMISSIONS[role])
        group.permissions.set(perms)


def assign_role(user, role: str) -> None:
    """Give ``user`` exactly one studio role (admins also get Django admin access)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    user.groups.remove(*Group.objects.filter(name__in=ROLES))
    user.groups.add(Group.objects.get(name=role))
    user.is_staff = role == ADMIN
    user.save(update_fields=["is_staff"])


def role_of(user) -> str | None:
    if user.is_superuser:
        return ADMIN
    names = set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
    return next((role for role in reversed(ROLES) if role in names), None)
