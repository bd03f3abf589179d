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


PROBLEM_DESCRIPTION = "application/problem+json; code: "  # how `apikit.problems` describes an error response


def document_request_body_problems(result, generator, request, public):
    """Every operation that reads a body documents the two refusals DRF answers before any view code:
    a body that does not parse (400 MALFORMED_REQUEST) and one of a media type the view does not take
    (415 UNSUPPORTED_MEDIA_TYPE). Added here, to every such operation, so no view can forget them."""
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            if isinstance(operation, dict) and "requestBody" in operation:
                responses = operation.setdefault("responses", {})
                _document_code(responses, "400", "MALFORMED_REQUEST")
                _document_code(responses, "415", "UNSUPPORTED_MEDIA_TYPE")
    return result


def _document_code(responses: dict, status: str, code: str) -> None:
    response = responses.get(status)
    if response is None:
        responses[status] = {
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
            "description": PROBLEM_DESCRIPTION + code,
        }
        return
    description = response.get("description", "")
    if code not in description.removeprefix(PROBLEM_DESCRIPTION).split(", "):
        response["description"] = f"{description}, {code}" if description else PROBLEM_DESCRIPTION + code
