"""Teach drf-spectacular about our bearer-token authentication."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class JWTBearerScheme(OpenApiAuthenticationExtension):
    target_class = "customers.auth.JWTAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": (
                "HS256 JWT with `iss`, `aud`, `exp`, `sub` and `scope` (space-separated: customers:read, "
                "customers:write, customers:admin). An optional `customer_id` claim limits the token to that customer."
            ),
        }
