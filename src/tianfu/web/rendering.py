"""Jinja2 rendering for people: translations, the signed-in user, navigation and the error page."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape

from tianfu import __version__
from tianfu.core import i18n
from tianfu.core.i18n import N_
from tianfu.core.plugins import CAPABILITIES, TianfuModule, installed_modules
from tianfu.core.security.permissions import Permission
from tianfu.core.security.principal import Principal

TEMPLATES = Path(__file__).parent / "templates"
CHINA_TIME = timezone(timedelta(hours=8))  # the hospitals are in Chengdu; times are shown in UTC+8


@lru_cache
def environment() -> Environment:
    loaders = [FileSystemLoader(TEMPLATES)]
    loaders += [FileSystemLoader(m.templates_dir) for m in installed_modules() if m.templates_dir]
    env = Environment(
        loader=ChoiceLoader(loaders),
        autoescape=select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_callables(  # type: ignore[attr-defined]
        lambda message, **kw: i18n.gettext_(message, **kw),
        lambda singular, plural, n, **kw: i18n.ngettext_(singular, plural, n, **kw),
        newstyle=True,
    )
    env.filters["localtime"] = localtime
    env.filters["localdate"] = lambda d: d.isoformat() if isinstance(d, date) else ""
    env.filters["age"] = age
    env.filters["loc"] = local_name
    env.globals["version"] = __version__
    env.globals["languages"] = i18n.LANGUAGES
    env.globals["Permission"] = Permission
    return env


def localtime(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(CHINA_TIME).strftime(fmt)


def local_name(record: Any) -> str:
    """A ward's, bed's or institution's name in the page language (Chinese unless an English one exists)."""
    if record is None:
        return ""
    english = getattr(record, "name_en", "")
    return str(english if english and i18n.current_language() == "en" else record.name)


def age(birth: date | None) -> str:
    if birth is None:
        return ""
    today = datetime.now(CHINA_TIME).date()
    years = today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))
    if years >= 2:
        return i18n.gettext_("%(n)s y", n=years)
    months = (today.year - birth.year) * 12 + today.month - birth.month - (today.day < birth.day)
    return i18n.gettext_("%(n)s mo", n=max(months, 0))


def module_link(module: TianfuModule, principal: Principal) -> str:
    """A module's first page for this person: auditors, who read no charts, go to its review pages."""
    if (
        module.review_path
        and principal.can(Permission.AUDIT_READ)
        and not principal.can(Permission.CLINICAL_READ)
    ):
        return module.review_path
    return module.home_path


def navigation(principal: Principal | None) -> list[dict[str, Any]]:
    if principal is None:
        return []
    items: list[dict[str, Any]] = [{"href": "/", "label": N_("Home"), "icon": "home"}]
    if principal.can(Permission.PATIENT_READ) and principal.role != "patient":
        items.append({"href": "/patients", "label": N_("Patients"), "icon": "users"})
    installed = {m.key: m for m in installed_modules()}
    for capability in CAPABILITIES:
        module = installed.get(capability.key)
        if module is not None:
            items.append(
                {"href": module_link(module, principal), "label": capability.title, "icon": capability.icon}
            )
    if principal.role == "patient":
        items.append({"href": "/me/record", "label": N_("My record"), "icon": "file"})
        items.append({"href": "/me/access-log", "label": N_("Who accessed my record"), "icon": "eye"})
    if principal.can(Permission.USER_READ):
        items.append({"href": "/admin/users", "label": N_("Users"), "icon": "key"})
    if principal.can(Permission.DEAD_LETTER_MANAGE):
        items.append({"href": "/admin/dead-letters", "label": N_("Dead letters"), "icon": "inbox"})
    if principal.can(Permission.AUDIT_READ):
        items.append({"href": "/audit", "label": N_("Audit trail"), "icon": "shield"})
    items.append({"href": "/account", "label": N_("My account"), "icon": "user"})
    return items


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    principal: Principal | None = getattr(request.state, "principal", None)
    path = request.url.path
    base_context = {
        "request": request,
        "principal": principal,
        "nav": navigation(principal),
        "current_path": path,
        "lang": i18n.current_language(),
        "csrf_token": principal.csrf_token if principal else "",
        "flash": request.query_params.get("msg", ""),
    }
    html = environment().get_template(template).render(base_context | (context or {}))
    return HTMLResponse(html, status_code=status_code, headers=headers)


def redirect(url: str, message: str = "") -> RedirectResponse:
    """303 to ``url``, with a message shown once at the top of the next page (before any #fragment)."""
    if message:
        path, _, fragment = url.partition("#")
        url = (
            path
            + ("&" if "?" in path else "?")
            + "msg="
            + quote(message)
            + (f"#{fragment}" if fragment else "")
        )
    return RedirectResponse(url, status_code=303)


def render_error_page(request: Request, status: int, title: str, detail: str) -> HTMLResponse:
    return render(
        request, "errors/error.html", {"status": status, "title": title, "detail": detail}, status_code=status
    )
