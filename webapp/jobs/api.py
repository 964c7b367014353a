from django.shortcuts import get_object_or_404
from typing import Optional

from ninja import Query, Router, Status

from webapp.accounts.auth import role_auth
from webapp.jobs import services
from webapp.jobs.schemas import JobDetailOut, JobOut
from webapp.validation import text

router = Router(tags=["jobs"])
viewer = role_auth("jobs.view_job")


@router.get("/jobs", auth=viewer, response=list[JobOut])
def list_jobs(request, status: Optional[text(16)] = None, kind: Optional[text(32)] = None,
              limit: int = Query(50, ge=1, le=500)):
    """Your jobs (admins: everybody's), newest first."""
    services.recover_lost_jobs()  # what is listed as running has a live worker
    jobs = services.visible_jobs(request.user)
    if status:
        jobs = jobs.filter(status=status)
    if kind:
        jobs = jobs.filter(kind=kind)
    return jobs[:limit]


@router.get("/jobs/{job_id}", auth=viewer, response=JobDetailOut)
def get_job(request, job_id: int):
    services.recover_lost_jobs()
    return get_object_or_404(services.visible_jobs(request.user), pk=job_id)


@router.post("/jobs/{job_id}/cancel", auth=viewer, response=JobOut)
def cancel_job(request, job_id: int):
    return services.cancel(get_object_or_404(services.visible_jobs(request.user), pk=job_id), request.user)


@router.post("/jobs/{job_id}/retry", auth=viewer, response={202: JobOut})
def retry_job(request, job_id: int):
    job = get_object_or_404(services.visible_jobs(request.user), pk=job_id)
    return Status(202, services.retry(job, request.user))


