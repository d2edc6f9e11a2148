"""``tianfu ai``: the model registry, local validation and field performance from the shell."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

if TYPE_CHECKING:
    from tianfu.core.audit.service import Actor
    from tianfu.core.kernel import Kernel

app = typer.Typer(
    help="AI diagnosis platform: model registry, local validation, field performance.", no_args_is_help=True
)
console = Console()
err = Console(stderr=True)


def _kernel() -> Kernel:
    from tianfu.cli import _kernel as make_kernel

    return make_kernel()


def _actor() -> Actor:
    from tianfu.cli import _cli_actor

    return _cli_actor()


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]{message}[/red]")
    return typer.Exit(1)


@app.command("models")
def list_models() -> None:
    """Every registered model version; * marks the active one."""
    from tianfu.core.model_registry import service as registry

    kernel = _kernel()
    with kernel.sessions() as session, session.begin():
        rows = registry.versions(session)
        table = Table("")
        table.add_column("model", no_wrap=True)
        for column in ("version", "task", "source", "trained", "metrics", "sha256"):
            table.add_column(column)
        for r in rows:
            metrics = ", ".join(f"{k} {v:.3g}" for k, v in list(r.manifest["metrics"].items())[:4])
            table.add_row(
                "*" if r.active else "",
                r.name,
                r.version,
                r.task,
                r.source,
                r.manifest["trained_on"],
                metrics,
                r.sha256[:12],
            )
    console.print(table)
    kernel.engine.dispose()


@app.command()
def activate(
    name: str,
    version: str,
    reason: Annotated[str, typer.Option(help="Why; kept in the audit trail.")],
) -> None:
    """Make VERSION the one the module runs (a rollback is activating an earlier version)."""
    from tianfu.core.errors import DomainError
    from tianfu.core.model_registry import service as registry

    kernel = _kernel()
    try:
        with kernel.sessions() as session, session.begin():
            registry.activate(
                session, kernel.audit, actor=_actor(), name=name, version=version, reason=reason
            )
    except DomainError as exc:
        raise _fail(str(exc)) from exc
    finally:
        kernel.engine.dispose()
    console.print(f"{name} {version} is active")


@app.command()
def deactivate(name: str, reason: Annotated[str, typer.Option(help="Why; kept in the audit trail.")]) -> None:
    """Switch a model off; its module stops running it."""
    from tianfu.core.errors import DomainError
    from tianfu.core.model_registry import service as registry

    kernel = _kernel()
    try:
        with kernel.sessions() as session, session.begin():
            registry.deactivate(session, kernel.audit, actor=_actor(), name=name, reason=reason)
    except DomainError as exc:
        raise _fail(str(exc)) from exc
    finally:
        kernel.engine.dispose()
    console.print(f"{name} is switched off")


@app.command()
def register(
    metadata: Annotated[Path, typer.Argument(help="The new version's metadata JSON, beside its weights.")],
    module: Annotated[str, typer.Option(help="The module that runs it: imaging, triage, monitoring.")],
) -> None:
    """Import a model version (e.g. a training script's output); it stays inactive until activated."""
    from tianfu.core.errors import DomainError
    from tianfu.core.model_registry import service as registry
    from tianfu.core.plugins import installed_modules

    reader = next((m.read_model_manifest for m in installed_modules() if m.key == module), None)
    if reader is None:
        raise _fail(f"module {module} is not installed or imports no models")
    try:
        manifest = reader(metadata.resolve())
    except (OSError, ValueError, KeyError) as exc:
        raise _fail(f"cannot read {metadata}: {exc}") from exc
    kernel = _kernel()
    try:
        with kernel.sessions() as session, session.begin():
            row = registry.register(
                session, kernel.audit, actor=_actor(), manifest=manifest, var_dir=kernel.settings.var_dir
            )
            console.print(f"registered {row.name} {row.version} (sha256 {row.sha256[:12]}), inactive")
    except DomainError as exc:
        raise _fail(str(exc)) from exc
    finally:
        kernel.engine.dispose()


@app.command()
def validate(
    model: Annotated[str, typer.Option(help="Model name, as `tianfu ai models` lists it.")],
    data: Annotated[
        Path, typer.Option(help="A labelled dataset in the task's format.", exists=True, dir_okay=True)
    ],
    version: Annotated[str | None, typer.Option(help="A version other than the active one.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write report.html and report.pdf here.")] = None,
    bootstrap: Annotated[
        int, typer.Option(min=100, max=10_000, help="Bootstrap resamples for the CIs.")
    ] = 1000,
) -> None:
    """Run a model version on local labelled data: metrics with 95 % CIs against its card; JSON last."""
    from tianfu.ai import service
    from tianfu.core.errors import DomainError

    kernel = _kernel()
    try:
        with kernel.sessions() as session, session.begin():
            run = service.create_validation(
                session,
                kernel.audit,
                actor=_actor(),
                model_name=model,
                version=version,
                data_path=data,
                dataset_name=data.name,
            )
            run_id = run.id
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
        ) as bar:
            job = bar.add_task(f"{model}", total=None)
            done = service.execute_validation(
                kernel.sessions,
                run_id,
                data,
                n_boot=bootstrap,
                on_progress=lambda n, total: bar.update(job, completed=n, total=total),
            )
    except DomainError as exc:
        raise _fail(str(exc)) from exc
    finally:
        kernel.engine.dispose()
    if done.status != "done":
        raise _fail(f"validation failed: {done.error}")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.html").write_text(done.report_html, encoding="utf-8")
        (out / "report.pdf").write_bytes(done.report_pdf or b"")
        err.print(f"report: {out / 'report.html'} and {out / 'report.pdf'}")
    table = Table("metric", "value", "95 % CI", "model card")
    for m in done.summary["metrics"]:
        ci = "" if m["ci_low"] is None else f"{m['ci_low']:.3f}–{m['ci_high']:.3f}"
        card = "" if m["card_value"] is None else f"{m['card_value']:.3f}"
        value = "" if m["value"] is None else f"{m['value']:.3f}"
        table.add_row(m["name"], value, ci, card)
    err.print(table)
    print(
        json.dumps(
            {"run_id": done.id, "model": done.model_name, "version": done.model_version, **done.summary}
        )
    )


@app.command()
def field(model: str) -> None:
    """Field performance of a model over the configured window, as JSON."""
    from tianfu.ai import service
    from tianfu.ai.settings import get_ai_settings

    kernel = _kernel()
    with kernel.sessions() as session, session.begin():
        summary = service.field_performance(session, model, get_ai_settings())
        print(json.dumps(summary.to_json(), ensure_ascii=False))
    kernel.engine.dispose()


@app.command("check-alerts")
def check_alerts() -> None:
    """Check every model's agreement and input drift against the thresholds; print new alerts."""
    from tianfu.ai import service
    from tianfu.ai.settings import get_ai_settings

    kernel = _kernel()
    with kernel.sessions() as session, session.begin():
        for alert in service.check_alerts(session, get_ai_settings()):
            console.print(f"[red]{alert.model_name}[/red] {alert.kind} {alert.subject}: {alert.message}")
    kernel.engine.dispose()
