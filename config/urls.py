from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from customers import health

api_v1 = [
    path("", include("customers.urls")),
    path("", include("addresses.urls")),
    path("", include("consent.urls")),
    path("", include("segments.urls")),
    path("", include("privacy.urls")),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("health/live", health.live, name="health-live"),
    path("health/ready", health.ready, name="health-ready"),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
]

handler404 = "customers.api_errors.page_not_found"
handler500 = "customers.api_errors.server_error"
