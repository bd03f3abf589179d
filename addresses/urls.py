from rest_framework.routers import SimpleRouter

from addresses.api import AddressViewSet

router = SimpleRouter(trailing_slash=False)
router.register(r"customers/(?P<customer_id>[0-9a-fA-F-]{36})/addresses", AddressViewSet, basename="customer-address")

urlpatterns = router.urls
