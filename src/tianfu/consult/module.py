"""Remote consultation (远程会诊), plugged into the kernel."""

from __future__ import annotations

from pathlib import Path

from tianfu.consult import bench, views
from tianfu.core.kernel import Kernel
from tianfu.core.plugins import TianfuModule


def seed_demo(kernel: Kernel) -> None:
    from tianfu.consult.demo import seed

    seed(kernel)


MODULE = TianfuModule(
    key="consult",
    home_path="/consult",
    api_router=views.api,
    page_router=views.pages,
    templates_dir=Path(__file__).parent / "templates",
    model_modules=("tianfu.consult.tables",),
    seed_demo=seed_demo,
    bench=bench.command,
)
