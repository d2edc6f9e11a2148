"""The ``tianfu`` command line."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from tianfu.core.plugins import installed_modules
from tianfu.core.settings import Settings

if TYPE_CHECKING:
    from tianfu.core.audit.service import Actor
    from tianfu.core.kernel import Kernel

app = typer.Typer(
    help="Tianfu 天府智医: smart-healthcare platform.", no_args_is_help=True, add_completion=False
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
user_app = typer.Typer(help="User accounts.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit trail.", no_args_is_help=True)
bus_app = typer.Typer(help="The event bus.", no_args_is_help=True)
bench_app = typer.Typer(help="Measure throughput and latency of a running path.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(user_app, name="user")
app.add_typer(audit_app, name="audit")
app.add_typer(bus_app, name="bus")
app.add_typer(bench_app, name="bench")
for _module in installed_modules():
    if _module.cli is not None:
        app.add_typer(_module.cli, name=_module.cli_name or _module.key)
    if _module.bench is not None:
        bench_app.command(_module.key)(_module.bench)

console = Console()
err = Console(stderr=True)


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        for error in exc.errors():
            err.print(f"[red]configuration error:[/red] {error['msg']}")
        raise typer.Exit(2) from exc


def _kernel(settings: Settings | None = None) -> Kernel:
    from tianfu.core.kernel import Kernel

    return Kernel(settings or load_settings())


def _cli_actor() -> Actor:
    from tianfu.core.audit.service import Actor

    return Actor(user_id=None, username=f"cli:{getpass.getuser()}"[:64], role="system")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on (TIANFU_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (TIANFU_PORT).")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes (use with PostgreSQL and NATS).")] = 1,
) -> None:
    """Serve the web interface, the API, FHIR and every module's listeners."""
    import uvicorn

    settings = load_settings()
    if settings.demo:
        from tianfu.core.migrate import upgrade

        upgrade(settings.database_url)
    else:
        kernel = _kernel(settings)
        state = kernel.database_ready()
        kernel.engine.dispose()
        if not state["ok"]:
            err.print(
                f"[red]database schema is at {state['current']}, code expects {state['head']}:[/red] "
                "run `tianfu db upgrade` first"
            )
            raise typer.Exit(1)
    if workers > 1 and settings.is_sqlite:
        err.print(
            "[yellow]several workers on SQLite serialise on one file; use PostgreSQL to scale out[/yellow]"
        )
    where = f"http://{host or settings.host}:{port or settings.port}"
    console.print(
        f"[bold]Tianfu 天府智医[/bold] serving at [link={where}]{where}[/link]"
        f"{'  (demo mode)' if settings.demo else ''}"
    )
    uvicorn.run(
        "tianfu.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_level="info",
        proxy_headers=True,
    )


@app.command()
def worker() -> None:
    """Run the modules' bus consumers and listeners without the web server (scale-out)."""
    from tianfu.app import start_modules

    settings = load_settings()

    async def main() -> None:
        kernel = _kernel(settings)
        await kernel.start()
        subscriptions, stoppers = await start_modules(kernel)
        console.print(
            f"worker running: {len(subscriptions)} consumers, {len(stoppers)} services; Ctrl-C stops"
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        for stopper in stoppers:
            await stopper()
        for subscription in subscriptions:
            await subscription.stop()
        await kernel.stop()

    asyncio.run(main())


@app.command()
def demo() -> None:
    """Seed the demo hospital network and print its accounts (demo mode only)."""
    from tianfu.core.migrate import upgrade
    from tianfu.demo import DEMO_PASSWORD, seed

    settings = load_settings()
    if not settings.demo:
        err.print(
            "[red]refusing to seed demo accounts with a published password outside demo mode[/red] "
            "(set TIANFU_DEMO=1)"
        )
        raise typer.Exit(2)
    upgrade(settings.database_url)
    kernel = _kernel(settings)
    created = seed(kernel)
    if created:
        for module in installed_modules():
            if module.seed_demo is not None:
                module.seed_demo(kernel)
    kernel.engine.dispose()
    from tianfu.demo import ACCOUNTS

    table = Table(title="Demo accounts 演示账号" + ("" if created else " (already seeded)"))
    for column in ("username", "name", "role", "institution", "wards"):
        table.add_column(column)
    for account in ACCOUNTS:
        table.add_row(
            account.username,
            account.display_name,
            account.role,
            account.organization,
            ", ".join(account.wards),
        )
    console.print(table)
    console.print(f"Password for every demo account 所有演示账号的密码: [bold]{DEMO_PASSWORD}[/bold]")


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "heads") -> None:
    """Apply migrations up to the newest (or a given) revision."""
    from tianfu.core.migrate import upgrade

    settings = load_settings()
    upgrade(settings.database_url, revision)
    console.print(f"database at {revision}")


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument(help="Target revision, e.g. -1 or base.")]) -> None:
    """Revert migrations."""
    from tianfu.core.migrate import downgrade

    downgrade(load_settings().database_url, revision)
    console.print(f"database at {revision}")


@db_app.command("current")
def db_current() -> None:
    """Show the schema revision of the database and of the code."""
    kernel = _kernel()
    console.print_json(data=kernel.database_ready())
    kernel.engine.dispose()


@user_app.command("add")
def user_add(
    username: Annotated[str, typer.Option(help="Login name (lower case).")],
    role: Annotated[
        str, typer.Option(help="nurse, physician, radiologist, consultant, admin, auditor, patient")
    ],
    display_name: Annotated[str | None, typer.Option(help="Name shown to others.")] = None,
    organization: Annotated[
        str | None, typer.Option("--org", help="Institution code (default: the only one).")
    ] = None,
    ward: Annotated[list[str] | None, typer.Option(help="Ward code; repeat for several.")] = None,
    patient_mrn: Annotated[str | None, typer.Option(help="For a patient account: the patient's MRN.")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin.")
    ] = False,
) -> None:
    """Create an account (audited as done from the command line)."""
    from sqlalchemy import select

    from tianfu.core.identity import service as identity
    from tianfu.core.patients.models import Location, Organization, Patient

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Repeat: "):
            err.print("[red]passwords differ[/red]")
            raise typer.Exit(1)
    kernel = _kernel()
    with kernel.sessions() as session:
        orgs = session.scalars(select(Organization)).all()
        if organization:
            org = next((o for o in orgs if o.code == organization), None)
        elif len(orgs) == 1:
            org = orgs[0]
        else:
            codes = ", ".join(o.code for o in orgs) or "none exist yet"
            err.print(f"[red]name the institution with --org: {codes}[/red]")
            raise typer.Exit(1)
        if org is None:
            err.print(f"[red]no institution {organization}[/red]")
            raise typer.Exit(1)
        ward_ids = []
        for code in ward or []:
            location = session.scalar(
                select(Location).where(Location.organization_id == org.id, Location.code == code)
            )
            if location is None:
                err.print(f"[red]no ward {code} at {org.code}[/red]")
                raise typer.Exit(1)
            ward_ids.append(location.id)
        patient_id = None
        if patient_mrn:  # MRNs are unique within one institution only
            patient_id = session.scalar(
                select(Patient.id).where(
                    Patient.managing_organization_id == org.id, Patient.mrn == patient_mrn
                )
            )
            if patient_id is None:
                err.print(f"[red]no patient with MRN {patient_mrn} at {org.code}[/red]")
                raise typer.Exit(1)
        try:
            user = identity.create_user(
                session,
                kernel.audit,
                actor=_cli_actor(),
                new=identity.NewUser(
                    username=username,
                    display_name=display_name or username,
                    role=role,
                    password=password,
                    organization_id=org.id,
                    ward_ids=ward_ids,
                    patient_id=patient_id,
                ),
            )
        except identity.AccountError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from exc
        session.commit()
        console.print(f"created {user.username} ({user.role}) at {org.code}")
    kernel.engine.dispose()


@user_app.command("unlock")
def user_unlock(username: str) -> None:
    """Lift a lockout after failed sign-ins."""
    from sqlalchemy import select

    from tianfu.core.identity import service as identity
    from tianfu.core.identity.models import User

    kernel = _kernel()
    with kernel.sessions() as session:
        user = session.scalar(select(User).where(User.username == username))
        if user is None:
            err.print(f"[red]no user {username}[/red]")
            raise typer.Exit(1)
        identity.unlock(session, kernel.audit, actor=_cli_actor(), user=user)
        session.commit()
    console.print(f"unlocked {username}")


@audit_app.command("verify")
def audit_verify(
    checkpoints: Annotated[
        Path | None, typer.Option(help="File of checkpoints from `tianfu audit checkpoint` to compare with.")
    ] = None,
) -> None:
    """Check the audit hash chain; exits 1 if any record was edited or deleted."""
    kernel = _kernel()
    with kernel.sessions() as session:
        result = kernel.audit.verify(session)
        if checkpoints is not None:
            points = [json.loads(line) for line in checkpoints.read_text().splitlines() if line.strip()]
            result.problems += kernel.audit.check_checkpoints(session, points)
            result.ok = not result.problems
        session.rollback()
        kernel.audit.record(
            session,
            actor=_cli_actor(),
            action="audit.verify",
            action_type="E",
            resource_type="AuditEvent",
            outcome=0 if result.ok else 8,
            outcome_desc="; ".join(result.problems[:5]),
            detail={"checked": result.checked},
        )
        session.commit()
    kernel.engine.dispose()
    if result.ok:
        console.print(
            f"[green]audit chain intact[/green]: {result.checked} records, newest #{result.last_seq}"
        )
        return
    err.print(f"[red]audit chain BROKEN[/red] after checking {result.checked} records:")
    for problem in result.problems:
        err.print(f"  - {problem}")
    raise typer.Exit(1)


@audit_app.command("checkpoint")
def audit_checkpoint(
    append: Annotated[
        Path | None, typer.Option(help="Append the checkpoint to this file (one JSON per line).")
    ] = None,
) -> None:
    """Print an authenticated checkpoint of the chain's newest record. Keep these where the database's
    administrators cannot rewrite them (write-once storage, another system's log, paper): later,
    `tianfu audit verify --checkpoints FILE` shows whether the trail was rolled back or rewritten."""
    kernel = _kernel()
    with kernel.sessions() as session:
        point = kernel.audit.checkpoint(session)
    kernel.engine.dispose()
    line = json.dumps(point, sort_keys=True)
    if append is not None:
        with append.open("a") as handle:
            handle.write(line + "\n")
    sys.stdout.write(line + "\n")


@audit_app.command("export")
def audit_export(
    since: Annotated[
        datetime | None, typer.Option(help="ISO date-time, e.g. 2026-11-01T00:00:00+08:00")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many records.")] = 10_000,
) -> None:
    """Print audit records as a FHIR R4 Bundle of AuditEvent (e.g. for a regulator)."""
    from tianfu.core.audit import service as audit_service
    from tianfu.core.fhir import translators

    kernel = _kernel()
    with kernel.sessions() as session:
        rows = session.scalars(audit_service.search(since=since).limit(limit)).all()
        bundle = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": translators.audit_event(r)} for r in reversed(rows)],
        }
        kernel.audit.record(
            session,
            actor=_cli_actor(),
            action="audit.export",
            action_type="R",
            resource_type="AuditEvent",
            detail={"records": len(rows)},
        )
        session.commit()
    kernel.engine.dispose()
    sys.stdout.write(json.dumps(bundle, ensure_ascii=False, indent=1) + "\n")


@bus_app.command("tail")
def bus_tail(subject: Annotated[str, typer.Argument(help="Subject filter")] = "tianfu.>") -> None:
    """Print events as they are published (needs TIANFU_BUS_URL=nats://...)."""
    settings = load_settings()
    if settings.bus_url.startswith("memory://"):
        err.print(
            "[red]the in-process bus lives inside `tianfu serve`; tailing needs TIANFU_BUS_URL=nats://...[/red]"
        )
        raise typer.Exit(2)
    from tianfu.core.bus import Event, make_bus

    async def main() -> None:
        bus = make_bus(settings.bus_url)
        await bus.start()

        async def show(event: Event) -> None:
            data = json.dumps(event.data, ensure_ascii=False)
            console.print(f"[dim]{event.occurred_at:%H:%M:%S}[/dim] [bold]{event.subject}[/bold] {data}")

        await bus.subscribe(subject, f"tail-{os.getpid()}", show)
        try:
            await asyncio.Event().wait()
        finally:
            await bus.close()

    asyncio.run(main())


if __name__ == "__main__":
    app()
