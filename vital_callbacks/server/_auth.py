"""Bearer tokens from ``VITAL_API_TOKENS`` and the tenant scope each one grants.

A token is bound to one tenant, or to ``*`` (admin: every tenant). The tenant of a request comes from
its token, never from its parameters: a tenant token that names another tenant gets 403, and one that
names none is narrowed to its own. Tokens are compared with :func:`hmac.compare_digest` against
*every* configured token, so the response time does not reveal how much of a guess was right, nor
which entry matched.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import HTTPException, status

ADMIN = "*"
COOKIE = "vital_token"
"""The browser's copy of a token (set by the UI's sign-in, ``HttpOnly``, ``SameSite=Strict``): the
UI's pages and the API calls its scripts make carry it instead of an ``Authorization`` header."""


@dataclass(frozen=True)
class Principal:
    """Who is asking: a tenant, or an admin (``tenant_id`` None) who may ask about any tenant."""

    tenant_id: str | None

    @property
    def is_admin(self) -> bool:
        return self.tenant_id is None

    def scope(self, requested: str | None) -> str | None:
        """The tenant filter to apply: the requested one if allowed; 403 if it is someone else's."""
        if self.tenant_id is None:
            return requested
        if requested is not None and requested != self.tenant_id:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "this token may only read its own tenant")
        return self.tenant_id


class TokenTable:
    """The configured tokens; :meth:`lookup` finds the principal of a presented token."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._entries = [(tenant, token.encode()) for tenant, token in pairs]

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    def parse(cls, text: str | None) -> TokenTable:
        """``tenantA:tokenA,tenantB:tokenB,*:admintoken`` (the tenant is everything before the first
        colon, so tokens may contain colons). Errors name the entry's position, never its token."""
        pairs: list[tuple[str, str]] = []
        first_seen: dict[str, tuple[int, str]] = {}
        for position, entry in enumerate((text or "").split(","), start=1):
            entry = entry.strip()
            if not entry:
                continue
            tenant, sep, token = entry.partition(":")
            tenant, token = tenant.strip(), token.strip()
            if not sep or not tenant or not token:
                raise ValueError(f"VITAL_API_TOKENS entry {position} is not 'tenant:token'")
            # One token, one scope: listed for two tenants (or a tenant and '*'), whichever entry
            # matched last would decide, and a tenant's token could read every tenant.
            earlier = first_seen.get(token)
            if earlier is not None and earlier[1] != tenant:
                raise ValueError(f"VITAL_API_TOKENS entries {earlier[0]} and {position} give one token to two "
                                 f"scopes ({earlier[1]!r} and {tenant!r}); a token must name one tenant or '*'")
            first_seen.setdefault(token, (position, tenant))
            pairs.append((tenant, token))
        return cls(pairs)

    def lookup(self, presented: str) -> Principal | None:
        """The principal of a presented token; ``None`` for an unknown one."""
        candidate = presented.encode()
        found: Principal | None = None
        for tenant, token in self._entries:  # no early exit: constant work whatever matches
            if hmac.compare_digest(candidate, token):
                found = Principal(None if tenant == ADMIN else tenant)
        return found
