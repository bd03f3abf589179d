"""Who is acting: a staff user in the admin, an API token, or the system (tasks, migrations).

Every service takes an `Actor`; history rows, status changes and events record its `label`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID

SCOPE_READ = "customers:read"
SCOPE_WRITE = "customers:write"
SCOPE_ADMIN = "customers:admin"
ALL_SCOPES = (SCOPE_READ, SCOPE_WRITE, SCOPE_ADMIN)

# What a staff user may do is decided by Django permissions; these are the scope equivalents.
STAFF_SCOPE_PERMISSIONS = {
    SCOPE_READ: "customers.view_customer",
    SCOPE_WRITE: "customers.change_customer",
    SCOPE_ADMIN: "customers.suspend_customer",
}


@dataclass(frozen=True)
class Actor:
    kind: str  # "staff" | "token" | "system"
    subject: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    customer_id: UUID | None = None
    user: object | None = None  # the staff User for kind == "staff"

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.subject}"

    def has_scope(self, scope: str) -> bool:
        if self.kind == "system":
            return True
        if self.kind == "staff":
            return bool(self.user and self.user.has_perm(STAFF_SCOPE_PERMISSIONS[scope]))
        return scope in self.scopes

    @classmethod
    def for_staff(cls, user) -> Actor:
        return cls(kind="staff", subject=user.get_username(), user=user)

    @classmethod
    def system(cls, name: str) -> Actor:
        return cls(kind="system", subject=name)
