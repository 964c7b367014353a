from django.conf import settings
from django.http import Http404
from django.views.static import serve

from webapp.accounts.auth import RoleAuth
from webapp.studio.media import may_read


def protected_media(request, path: str):
    """Local media files, each only for those who may see a row that refers to it (webapp.studio.media); anyone
    else gets the same 404 as for a file that does not exist. S3 deployments hand out signed URLs instead."""
    from ninja.errors import HttpError

    try:
        user = RoleAuth()(request)
    except HttpError:
        user = None
    if not user or not may_read(user, path):
        raise Http404("not found")
    return serve(request, path, document_root=settings.MEDIA_ROOT)
