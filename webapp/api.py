"""The studio's REST API: one NinjaAPI under /api/ mounting each app's router; OpenAPI docs at /api/docs."""
from django.core.exceptions import PermissionDenied, ValidationError
from ninja import NinjaAPI

from webapp.accounts.api import router as accounts_router
from webapp.accounts.throttle import Throttled
from webapp.datasets.api import router as datasets_router
from webapp.editing.api import router as editing_router
from webapp.errors import Conflict, readable
from webapp.jobs.api import router as jobs_router
from webapp.jobs.services import TooManyJobs
from webapp.registry.api import router as registry_router

api = NinjaAPI(title="EditGAN Studio API", version="1", docs_url="/docs")
api.add_router("/", accounts_router)
api.add_router("/", datasets_router)
api.add_router("/", registry_router)
api.add_router("/", editing_router)
api.add_router("/", jobs_router)


@api.exception_handler(ValidationError)
def invalid_input(request, exc: ValidationError):
    return api.create_response(request, {"detail": readable(" ".join(exc.messages))}, status=400)


@api.exception_handler(PermissionDenied)
def forbidden(request, exc: PermissionDenied):
    return api.create_response(request, {"detail": str(exc) or "forbidden"}, status=403)


@api.exception_handler(Conflict)
def conflict(request, exc: Conflict):
    return api.create_response(request, {"detail": exc.detail, **exc.current}, status=409)


@api.exception_handler(TooManyJobs)
def too_many_jobs(request, exc: TooManyJobs):
    return api.create_response(request, {"detail": str(exc)}, status=429)


@api.exception_handler(Throttled)
def throttled(request, exc: Throttled):
    response = api.create_response(request, {"detail": str(exc)}, status=429)
    response["Retry-After"] = str(exc.retry_after)
    return response
