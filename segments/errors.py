"""Segments' errors: `customers.errors` classes with stable codes, mapped to HTTP by the one handler."""

from __future__ import annotations

from customers.errors import ApplicationError, Conflict, NotFound, ValidationFailed


class SegmentNotFound(NotFound):
    code = "SEGMENT_NOT_FOUND"

    def __init__(self, segment: object = None) -> None:
        super().__init__("No segment with this id." if segment is None else f"Segment {segment} not found.")


class InvalidSegmentRules(ValidationFailed):
    """`errors` maps the path of each bad node (e.g. `rules.all[1].op`) to its messages."""

    code = "INVALID_SEGMENT_RULES"

    def __init__(self, errors: dict[str, list[str]]) -> None:
        first = next(iter(errors.items()))
        super().__init__(f"The segment rules are invalid at {first[0]}: {first[1][0]}", errors=errors)


class SegmentNotStatic(Conflict):
    code = "SEGMENT_NOT_STATIC"

    def __init__(self, segment: object) -> None:
        super().__init__(f"Segment {segment} is dynamic: its members come from its rules, not by hand.")


class SegmentNotDynamic(Conflict):
    code = "SEGMENT_NOT_DYNAMIC"

    def __init__(self, segment: object) -> None:
        super().__init__(f"Segment {segment} is static: it has no rules to calculate.")


class SegmentInactive(Conflict):
    code = "SEGMENT_INACTIVE"

    def __init__(self, segment: object) -> None:
        super().__init__(f"Segment {segment} is inactive; activate it first.")


class SegmentCalculating(Conflict):
    code = "SEGMENT_CALCULATING"

    def __init__(self, segment: object) -> None:
        super().__init__(f"Segment {segment} is being calculated; try again when it is done.")


class SegmentAlreadyExists(Conflict):
    code = "SEGMENT_ALREADY_EXISTS"


class SegmentBuiltin(Conflict):
    code = "SEGMENT_BUILTIN"


class SegmentInUse(Conflict):
    code = "SEGMENT_IN_USE"


class ConsentRequired(Conflict):
    code = "CONSENT_REQUIRED"


class SegmentUpdateFailed(ApplicationError):
    """Membership could not be changed for a reason that is ours, not the caller's."""

    code = "SEGMENT_UPDATE_FAILED"
    kind = "internal"
