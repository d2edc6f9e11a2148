"""The AI diagnosis platform (人工智能诊断平台), plugged into the kernel."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from tianfu.ai import cli, views
from tianfu.core.kernel import Kernel
from tianfu.core.plugins import TianfuModule

log = logging.getLogger(__name__)


async def start_alert_checker(kernel: Kernel) -> Callable[[], Awaitable[None]]:
    """Checks every model's agreement and drift every TIANFU_AI_CHECK_INTERVAL_S seconds."""
    from tianfu.ai import service
    from tianfu.ai.settings import get_ai_settings

    settings = get_ai_settings()

    def check() -> None:
        with kernel.sessions() as session, session.begin():
            for alert in service.check_alerts(session, settings):
                log.warning("AI field alert: %s %s %s", alert.model_name, alert.kind, alert.message)

    async def loop() -> None:
        while True:
            await asyncio.sleep(settings.check_interval_s)
            try:
                await asyncio.to_thread(check)
            except Exception:  # a failed check must not stop the next one
                log.exception("AI field-performance check failed")

    task = asyncio.create_task(loop(), name="ai-alert-checker")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return stop


def seed_demo(kernel: Kernel) -> None:
    from tianfu.ai.demo import seed

    seed(kernel)


async def recover_validations(kernel: Kernel) -> Callable[[], Awaitable[None]]:
    """Validation runs whose worker died with the last server process are failed, not left polling."""
    from tianfu.ai import service

    def recover() -> None:
        with kernel.sessions() as session, session.begin():
            failed = service.recover_interrupted_runs(session, kernel.settings.var_dir)
        if failed:
            log.warning("%d validation runs were interrupted by the last stop", failed)

    await asyncio.to_thread(recover)

    async def nothing() -> None:
        return None

    return nothing


MODULE = TianfuModule(
    key="ai",
    home_path="/ai",
    api_router=views.api,
    page_router=views.pages,
    late_routers=lambda: (views.inference_router(),),
    templates_dir=Path(__file__).parent / "templates",
    static_dir=Path(__file__).parent / "static",
    model_modules=("tianfu.ai.tables",),
    cli=cli.app,
    cli_name="ai",
    services=(recover_validations, start_alert_checker),
    seed_demo=seed_demo,
    larger_body_limits=tuple((path, views.MAX_DATASET_BYTES) for path in views.UPLOAD_PATHS),
)
