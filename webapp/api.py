"""The studio's REST API: one NinjaAPI under /api/ mounting each app's router; OpenAPI docs at /api/docs."""
from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, ValidationError
from ninja import NinjaAPI
from ninja.errors import HttpError

from webapp.accounts.api import router as accounts_router
from webapp.accounts.throttle import Throttled
from webapp.datasets.api import router as datasets_router
from webapp.editing.api import router as editing_router
from webapp.errors import Conflict, readable
from webapp.jobs.api import router as jobs_router
from webapp.jobs.services import TooManyJobs
from webapp.registry.api import router as registry_router
from webapp.validation import StrictJSONParser, StrictJSONRenderer, UnreadableBody

api = NinjaAPI(title="EditGAN Studio API", version="1", docs_url="/docs", parser=StrictJSONParser(),
               renderer=StrictJSONRenderer())
api.add_router("/", accounts_router)
api.add_router("/", datasets_router)
api.add_router("/", registry_router)
api.add_router("/", editing_router)
api.add_router("/", jobs_router)


@api.exception_handler(HttpError)
def http_error(request, exc: HttpError):
    """ninja's own errors; for a body the parser refused, with the parser's reason."""
    reason = f": {exc.__cause__}" if isinstance(exc.__cause__, UnreadableBody) else ""
    return api.create_response(request, {"detail": f"{exc}{reason}"}, status=exc.status_code)


@api.exception_handler(RequestDataTooBig)
def too_large(request, exc: RequestDataTooBig):
    return api.create_response(request, {"detail": f"the request body is larger than the limit of "
                                                   f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes"}, status=413)


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
