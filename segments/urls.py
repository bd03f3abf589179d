from django.urls import re_path
from rest_framework.routers import SimpleRouter

from segments.api import CustomerSegmentViewSet, CustomerTierView, SegmentViewSet

CUSTOMER = r"customers/(?P<customer_id>[0-9a-fA-F-]{36})"

router = SimpleRouter(trailing_slash=False)
router.register("segments", SegmentViewSet, basename="segment")
router.register(CUSTOMER + "/segments", CustomerSegmentViewSet, basename="customer-segment")

urlpatterns = [
    *router.urls,
    re_path(rf"^{CUSTOMER}/tier$", CustomerTierView.as_view(), name="customer-tier"),
]
