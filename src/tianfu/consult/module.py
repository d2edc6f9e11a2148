"""Remote consultation (远程会诊), plugged into the kernel."""

from __future__ import annotations

from pathlib import Path

from tianfu.consult import bench, export, pages, views
from tianfu.consult.attachments import MAX_ATTACHMENT_BYTES, MULTIPART_OVERHEAD, UPLOAD_PATH_PREFIX
from tianfu.consult.timers import start_deadline_timers
from tianfu.core.kernel import Kernel
from tianfu.core.plugins import TianfuModule


def seed_demo(kernel: Kernel) -> None:
    from tianfu.consult.demo import seed

    seed(kernel)


MODULE = TianfuModule(
    key="consult",
    home_path="/consult",
    review_path="/consult/review",
    api_router=views.api,
    page_router=pages.router,
    fhir_router=export.fhir_router,
    extra_routers=(export.regulator_router,),
    templates_dir=Path(__file__).parent / "templates",
    static_dir=Path(__file__).parent / "static",
    model_modules=("tianfu.consult.tables",),
    seed_demo=seed_demo,
    services=(start_deadline_timers,),
    # Only the upload route takes attachments' 20 MB; it refuses a file over MAX_ATTACHMENT_BYTES itself.
    larger_body_limits=((UPLOAD_PATH_PREFIX, MAX_ATTACHMENT_BYTES + MULTIPART_OVERHEAD),),
    bench=bench.command,
)
