from django.urls import path

from webapp.realtime import consumers

websocket_urlpatterns = [
    path("ws/annotate/<int:sample_id>/", consumers.AnnotationConsumer.as_asgi()),
    path("ws/jobs/<int:job_id>/", consumers.JobConsumer.as_asgi()),
    path("ws/edits/<int:session_id>/", consumers.EditConsumer.as_asgi()),
    path("ws/apply/<int:sample_id>/", consumers.LiveApplyConsumer.as_asgi()),
]
