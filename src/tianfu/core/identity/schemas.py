"""API shapes of accounts and tokens. A password hash never leaves the service."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import Field

from tianfu.core.http.schemas import IsoDate, RequestModel, ResponseModel
from tianfu.core.security.permissions import ROLE_PERMISSIONS, Role

RoleName = Role


class TokenRequest(RequestModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)
    totp_code: str | None = Field(
        None, max_length=12, description="Required when the account uses a second factor"
    )


class UserOut(ResponseModel):
    id: str
    username: str
    display_name: str
    role: str
    organization_id: str | None
    patient_id: str | None
    is_active: bool
    locked_until: datetime | None
    last_login_at: datetime | None
    totp_enabled: bool
    ward_ids: list[str]
    licence_number: str
    professional_title: str
    specialty: str
    practicing_since: date | None
    phone: str


class MeOut(UserOut):
    permissions: list[str]


class TokenOut(ResponseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_in: int
    user: UserOut


class UserCreate(RequestModel):
    username: str = Field(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{2,63}$")
    display_name: str = Field(min_length=1, max_length=100)
    role: RoleName
    password: str = Field(min_length=10, max_length=256)
    organization_id: str | None = Field(None, max_length=36)
    ward_ids: list[str] = Field(default_factory=list, max_length=50)
    patient_id: str | None = Field(None, max_length=36)
    licence_number: str = Field("", max_length=64)
    professional_title: str = Field("", max_length=50)
    specialty: str = Field("", max_length=100)
    practicing_since: IsoDate | None = None
    phone: str = Field("", max_length=40)


class UserUpdate(RequestModel):
    display_name: str | None = Field(None, min_length=1, max_length=100)
    role: RoleName | None = None
    is_active: bool | None = None
    ward_ids: list[str] | None = Field(None, max_length=50)
    licence_number: str | None = Field(None, max_length=64)
    professional_title: str | None = Field(None, max_length=50)
    specialty: str | None = Field(None, max_length=100)
    practicing_since: IsoDate | None = None
    phone: str | None = Field(None, max_length=40)


class PasswordReset(RequestModel):
    new_password: str = Field(min_length=10, max_length=256)


class PasswordChange(RequestModel):
    current_password: str = Field(min_length=1, max_length=256)
    new_password: str = Field(min_length=10, max_length=256)


def permissions_of(role: str) -> list[str]:
    try:
        return sorted(p.value for p in ROLE_PERMISSIONS[Role(role)])
    except ValueError:
        return []
