from django.urls import path

from privacy import api

urlpatterns = [
    path(
        "customers/<uuid:customer_id>/privacy-requests",
        api.CustomerPrivacyRequests.as_view(),
        name="customer-privacy-requests",
    ),
    path("customers/<uuid:customer_id>/data", api.CustomerData.as_view(), name="customer-data"),
    path("customers/<uuid:customer_id>/erasure", api.customer_erasure, name="customer-erasure"),
    path(
        "customers/<uuid:customer_id>/restriction/lift",
        api.customer_lift_restriction,
        name="customer-lift-restriction",
    ),
    path("privacy-requests/<uuid:request_id>", api.PrivacyRequestDetail.as_view(), name="privacy-request-detail"),
]
