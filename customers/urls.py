from django.urls import re_path
from rest_framework.routers import SimpleRouter

from customers.activity_api import CustomerActivitiesView, CustomerTimelineView
from customers.api import CustomerViewSet
from customers.notes_api import CustomerNotesView, CustomerNoteView

router = SimpleRouter(trailing_slash=False)
router.register("customers", CustomerViewSet, basename="customer")

urlpatterns = [
    *router.urls,
    re_path(
        r"^customers/(?P<id>[0-9a-fA-F-]{36})/activities$", CustomerActivitiesView.as_view(), name="customer-activities"
    ),
    re_path(r"^customers/(?P<id>[0-9a-fA-F-]{36})/timeline$", CustomerTimelineView.as_view(), name="customer-timeline"),
    re_path(r"^customers/(?P<id>[0-9a-fA-F-]{36})/notes$", CustomerNotesView.as_view(), name="customer-notes"),
    re_path(
        r"^customers/(?P<id>[0-9a-fA-F-]{36})/notes/(?P<note_id>[0-9]{1,18})$",
        CustomerNoteView.as_view(),
        name="customer-note",
    ),
]
