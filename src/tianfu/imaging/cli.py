"""``tianfu imaging``: the DICOM listener and the models' evaluation."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(help="Medical image recognition.", no_args_is_help=True)
console = Console(stderr=True)


@app.command()
def listen() -> None:
    """Run the DICOM C-STORE/C-ECHO listener (TIANFU_DICOM_PORT, AE title TIANFU_DICOM_AE_TITLE) alone."""
    from tianfu.cli import load_settings
    from tianfu.core.kernel import Kernel
    from tianfu.imaging.dicom import get_dicom_settings
    from tianfu.imaging.dicom.scp import start_scp

    async def main() -> None:
        kernel = Kernel(load_settings())
        await kernel.start()
        stop = await start_scp(kernel)
        settings = get_dicom_settings()
        console.print(
            f"DICOM {settings.dicom_ae_title} listening on {settings.dicom_host}:{settings.dicom_port}; "
            "Ctrl-C stops"
        )
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, done.set)
        await done.wait()
        await stop()
        await kernel.stop()

    asyncio.run(main())


@app.command()
def evaluate(
    task: Annotated[str, typer.Option(help="pneumonia, breast or retina (or another shipped task).")],
    npz: Annotated[Path, typer.Option(help="A file in the MedMNIST layout (test_images, test_labels).")],
    split: Annotated[str, typer.Option(help="Which arrays: test, or val for our own checks.")] = "test",
) -> None:
    """AUC, accuracy, sensitivity and specificity at the shipped operating point; JSON on the last line."""
    from tianfu.imaging.evaluate import main

    raise typer.Exit(main(["--task", task, "--npz", str(npz), "--split", split]))
