from django.urls import re_path

from consent.api import CustomerConsentHistoryViewSet, CustomerConsentViewSet, PurposeViewSet

CUSTOMER = r"^customers/(?P<customer_id>[0-9a-fA-F-]{36})/consents"

urlpatterns = [
    re_path(CUSTOMER + r"$", CustomerConsentViewSet.as_view({"get": "list"}), name="customer-consents"),
    re_path(
        CUSTOMER + r"/history$",
        CustomerConsentHistoryViewSet.as_view({"get": "list"}),
        name="customer-consent-history",
    ),
    re_path(
        CUSTOMER + r"/object-to-marketing$",
        CustomerConsentViewSet.as_view({"post": "object_to_marketing"}),
        name="customer-consent-objection",
    ),
    re_path(
        CUSTOMER + r"/(?P<purpose>[a-z][a-z0-9_]{1,49})$",
        CustomerConsentViewSet.as_view({"put": "update"}),
        name="customer-consent",
    ),
    re_path(r"^consent/purposes$", PurposeViewSet.as_view({"get": "list"}), name="consent-purposes"),
]
