"""Who is calling: an authenticated identity (org, user, role), and what it may do with a request.
The org is the tenant: every read and write of a caller is scoped to it."""

from __future__ import annotations

from dataclasses import dataclass

ADMIN, USER, READER = "admin", "user", "reader"
ROLES = (ADMIN, USER, READER)


@dataclass(frozen=True, slots=True)
class Identity:
    """`org_id` None means "no tenant scope": auth is off and requests say which org they are for,
    exactly as before auth existed. An authenticated identity always has an org."""

    org_id: str | None
    user_id: str = ""
    role: str = ADMIN

    @property
    def can_write(self) -> bool:
        # reader: every read RPC, nothing that starts, decides, cancels, updates, deletes or re-sends.
        return self.role in (ADMIN, USER)

    def owner_of(self, org_id: str, user_id: str) -> tuple[str, str]:
        """The (org, user) a submission naming `org_id` and `user_id` is made for: the caller's org
        always wins over the body's; its user too, except that an admin may submit on behalf of
        another user of its own org. Unchanged while auth is off."""
        if self.org_id is None:
            return org_id, user_id
        return self.org_id, user_id if self.role == ADMIN and user_id else self.user_id


# The caller of every RPC while auth is off.
UNSCOPED = Identity(org_id=None)
