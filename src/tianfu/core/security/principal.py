"""The authenticated caller of a request."""

from __future__ import annotations

from dataclasses import dataclass

from tianfu.core.audit.service import Actor
from tianfu.core.security.permissions import PURPOSE_BY_ROLE, Permission, has_permission


@dataclass(frozen=True)
class Principal:
    user_id: str
    username: str
    display_name: str
    role: str
    organization_id: str | None
    patient_id: str | None
    ward_ids: tuple[str, ...]
    session_kind: str  # web | api
    csrf_token: str
    client_ip: str = ""

    def can(self, permission: Permission) -> bool:
        return has_permission(self.role, permission)

    @property
    def actor(self) -> Actor:
        return Actor(user_id=self.user_id, username=self.username, role=self.role, client_ip=self.client_ip)

    @property
    def purpose(self) -> str:
        return PURPOSE_BY_ROLE.get(self.role, "")
