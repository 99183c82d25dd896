"""Who is asking: the identity a request carries once it has been verified."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request


@dataclass(frozen=True, slots=True)
class Identity:
    """A verified caller (user and groups) or the anonymous one (no user, no groups)."""

    user: str | None = None
    groups: frozenset[str] = field(default_factory=frozenset)

    @property
    def verified(self) -> bool:
        return self.user is not None


ANONYMOUS = Identity()


async def current_identity(request: Request) -> Identity:
    """The identity the request was authenticated as, or the anonymous one."""
    identity = getattr(request.state, "identity", None)
    return identity if isinstance(identity, Identity) else ANONYMOUS


IdentityDep = Annotated[Identity, Depends(current_identity)]
