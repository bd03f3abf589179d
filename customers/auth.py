"""JWT bearer tokens with scopes for the API, and the management of those tokens."""

from __future__ import annotations

import functools
import time
from uuid import UUID, uuid4

import jwt
from django.conf import settings
from rest_framework import authentication, exceptions, permissions

from customers.actor import SCOPE_READ, SCOPE_WRITE, Actor

ALGORITHM = "HS256"


class TokenPrincipal:
    """`request.user` for API calls: the token's subject, scopes and optional customer limit."""

    is_authenticated = True
    is_anonymous = False
    is_staff = False

    def __init__(self, actor: Actor) -> None:
        self.actor = actor

    def __str__(self) -> str:
        return self.actor.label


def issue_token(*, scopes: list[str], subject: str, customer_id: UUID | None = None, ttl_seconds: int = 3600) -> str:
    now = int(time.time())
    claims = {
        "iss": settings.JWT_ISSUER,
        "aud": settings.JWT_AUDIENCE,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
        "jti": str(uuid4()),
        "scope": " ".join(scopes),
    }
    if customer_id is not None:
        claims["customer_id"] = str(customer_id)
    return jwt.encode(claims, settings.JWT_SIGNING_KEY, algorithm=ALGORITHM)


def actor_from_token(token: str) -> Actor:
    """The actor a bearer token stands for; expiry and not-before are checked on every call."""
    leeway = settings.JWT_LEEWAY_SECONDS
    try:
        actor, not_before, expires_at = _verified(
            token, settings.JWT_SIGNING_KEY, settings.JWT_AUDIENCE, settings.JWT_ISSUER, leeway
        )
    except jwt.ExpiredSignatureError:
        raise exceptions.AuthenticationFailed("The token has expired.") from None
    except jwt.InvalidTokenError as error:
        raise exceptions.AuthenticationFailed(f"Invalid token: {error}.") from None
    now = time.time()
    if now >= expires_at + leeway:
        raise exceptions.AuthenticationFailed("The token has expired.")
    if not_before is not None and now < not_before - leeway:
        raise exceptions.AuthenticationFailed("Invalid token: The token is not yet valid (nbf).")
    return actor


@functools.lru_cache(maxsize=4096)
def _verified(token: str, key: str, audience: str, issuer: str, leeway: int) -> tuple[Actor, float | None, float]:
    """A token's signature and claims, checked once per process: (actor, nbf, exp).

    Services send the same token for its whole life, and decoding it (base64, JSON, HMAC) was a fifth
    of a cached GET's CPU. Only tokens that verified are kept (an exception is not cached); the key,
    audience and issuer are part of the cache key, so a rotated key verifies every token again; the
    time claims are checked by the caller on every use.
    """
    claims = jwt.decode(
        token,
        key,
        algorithms=[ALGORITHM],
        audience=audience,
        issuer=issuer,
        leeway=leeway,
        options={"require": ["exp", "iss", "aud", "sub"]},
    )
    customer_id = claims.get("customer_id")
    if customer_id is not None:
        try:
            customer_id = UUID(str(customer_id))
        except ValueError:
            raise jwt.InvalidTokenError("customer_id is not a UUID") from None
    scope = claims.get("scope", "")
    if not isinstance(scope, str):
        raise jwt.InvalidTokenError("scope must be a space-separated string")
    actor = Actor(kind="token", subject=str(claims["sub"]), scopes=frozenset(scope.split()), customer_id=customer_id)
    return actor, claims.get("nbf"), claims["exp"]


class JWTAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        keyword, _, token = header.partition(" ")
        if keyword.lower() != self.keyword.lower() or not token.strip():
            raise exceptions.AuthenticationFailed("Use 'Authorization: Bearer <token>'.")
        actor = actor_from_token(token.strip())
        return TokenPrincipal(actor), actor

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="customer-service"'


def request_actor(request) -> Actor:
    return request.auth


class HasScope(permissions.BasePermission):
    """Reads need customers:read, writes customers:write; a view may name another per action.

    A view sets `required_scopes = {"action": "customers:admin", ...}` for exceptions.
    """

    message = "The token lacks the scope this operation needs."

    def has_permission(self, request, view) -> bool:
        actor = request.auth
        if not isinstance(actor, Actor):
            raise exceptions.NotAuthenticated()
        needed = required_scope(request, view)
        if not actor.has_scope(needed):
            self.message = f"This operation needs the scope {needed}."
            return False
        return True


def required_scope(request, view) -> str:
    overrides = getattr(view, "required_scopes", {})
    action = getattr(view, "action", None)
    if action in overrides:
        return overrides[action]
    return SCOPE_READ if request.method in permissions.SAFE_METHODS else SCOPE_WRITE
