from django.conf import settings
from django.contrib import admin
from django.urls import path, re_path
from django.views.generic import RedirectView

from webapp.api import api

urlpatterns = [
    path("", RedirectView.as_view(url="/static/index.html", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
]
if settings.STORAGE_BACKEND == "local":
    # Media files are served only to logged-in users with a role (see webapp.studio.views), never publicly.
    from webapp.studio.views import protected_media

    urlpatterns.append(re_path(r"^media/(?P<path>.+)$", protected_media))
