from django.conf import settings
from django.http import Http404
from django.views.static import serve

from webapp.accounts.auth import RoleAuth


def protected_media(request, path: str):
    """Local media files, for logged-in users with a studio role only (S3 deployments use signed URLs)."""
    from ninja.errors import HttpError

    try:
        allowed = RoleAuth("datasets.view_dataset")(request)
    except HttpError:
        allowed = None
    if not allowed:
        raise Http404("not found")
    return serve(request, path, document_root=settings.MEDIA_ROOT)
