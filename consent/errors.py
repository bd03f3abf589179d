"""Consent's errors: `customers.errors` classes with stable codes, mapped to HTTP by the one handler."""

from __future__ import annotations

from customers.errors import Conflict, NotFound, ValidationFailed


class PurposeNotFound(NotFound):
    code = "PURPOSE_NOT_FOUND"

    def __init__(self, code: object) -> None:
        super().__init__(f"No consent purpose {code!r}.")


class PolicyVersionNotFound(ValidationFailed):
    """The policy version named in the request does not exist (or is not in effect yet)."""

    code = "POLICY_VERSION_NOT_FOUND"

    def __init__(self, message: str) -> None:
        super().__init__(message, errors={"policy_version": [message]})


class PolicyVersionOutdated(ValidationFailed):
    code = "POLICY_VERSION_OUTDATED"

    def __init__(self, message: str) -> None:
        super().__init__(message, errors={"policy_version": [message]})


class TransitionNotAllowed(Conflict):
    code = "CONSENT_TRANSITION_NOT_ALLOWED"


class ConsentAlreadyInState(TransitionNotAllowed):
    """Asked for the state the consent is already in (e.g. denied → denied): not a move, refused.

    Its own code, so a client retrying a request whose answer it lost can tell "already so" from
    "not allowed".
    """

    code = "CONSENT_ALREADY_IN_STATE"


class PolicyVersionInUse(Conflict):
    code = "POLICY_VERSION_IN_USE"
