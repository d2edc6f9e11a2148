"""``tianfu monitor``: listen, worker, replay, news2, evaluate; and ``tianfu bench monitoring``."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(help="Central vital-sign monitoring.", no_args_is_help=True)
console = Console(stderr=True)


def _partitions(spec: str, total: int) -> list[int]:
    if spec in ("", "all"):
        return list(range(total))
    chosen: list[int] = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        chosen += range(int(low), int(high or low) + 1)
    if any(p < 0 or p >= total for p in chosen):
        raise typer.BadParameter(f"partitions are 0..{total - 1}")
    return sorted(set(chosen))


async def _run_until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


@app.command()
def listen() -> None:
    """Run the device listeners (HL7 MLLP, and MQTT when TIANFU_MQTT_URL is set) without the web server."""
    from tianfu.cli import load_settings
    from tianfu.core.kernel import Kernel
    from tianfu.monitoring.module import start_ingest
    from tianfu.monitoring.settings import get_monitoring_settings

    async def main() -> None:
        kernel = Kernel(load_settings())
        await kernel.start()
        stop = await start_ingest(kernel)
        settings = get_monitoring_settings()
        console.print(
            f"listening: HL7 MLLP on {settings.hl7_host}:{settings.hl7_port}"
            + (f", MQTT {settings.mqtt_url}" if settings.mqtt_url else "")
            + "; Ctrl-C stops"
        )
        await _run_until_signal()
        await stop()
        await kernel.stop()

    asyncio.run(main())


@app.command()
def worker(
    partitions: Annotated[
        str, typer.Option(help="Partitions to serve, e.g. 0-3 or 0,2 (default all).")
    ] = "all",
) -> None:
    """Score and raise alarms for some partitions of the device stream (scale-out: TIANFU_BUS_URL=nats://)."""
    from functools import partial

    from tianfu.cli import load_settings
    from tianfu.core.kernel import Kernel
    from tianfu.monitoring.module import active_sepsis_model
    from tianfu.monitoring.pipeline import Pipeline
    from tianfu.monitoring.settings import get_monitoring_settings

    settings = get_monitoring_settings()
    chosen = _partitions(partitions, settings.partitions)

    async def main() -> None:
        kernel = Kernel(load_settings())
        await kernel.start()
        pipeline = Pipeline(
            kernel, settings, partitions=chosen, model_source=partial(active_sepsis_model, kernel)
        )
        await pipeline.start()
        console.print(f"monitoring worker for partitions {chosen}; Ctrl-C stops")
        await _run_until_signal()
        await pipeline.stop()
        await kernel.stop()

    asyncio.run(main())


@app.command()
def replay(
    paths: Annotated[list[Path], typer.Argument(help=".psv / .csv files, directories, or a .tar.gz of .psv")],
    host: Annotated[str, typer.Option(help="Tianfu's HL7 MLLP listener.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Its port (TIANFU_HL7_PORT).")] = 2575,
    speed: Annotated[float, typer.Option(help="Times faster than real time.")] = 720.0,
    monitors: Annotated[int, typer.Option(help="At most this many recordings (one monitor each).")] = 12,
    device_prefix: Annotated[str, typer.Option(help="Device identifiers are PREFIX + number.")] = "REPLAY",
    seconds: Annotated[
        float | None, typer.Option(help="Stop after this long (default: when all ended).")
    ] = None,
    loop: Annotated[bool, typer.Option(help="Start each recording again when it ends.")] = False,
) -> None:
    """Stream recorded patients into a running Tianfu as bedside monitors (HL7 PCD-01 over MLLP)."""
    from tianfu.monitoring.replay import Monitor, load
    from tianfu.monitoring.replay import replay as run_replay

    recordings = load(paths)[:monitors]
    if not recordings:
        console.print("[red]no recordings found[/red]")
        raise typer.Exit(1)
    simulated = [Monitor(f"{device_prefix}{i + 1:04d}", r, loop=loop) for i, r in enumerate(recordings)]
    console.print(f"replaying {len(simulated)} recordings to {host}:{port} at {speed:g}× real time")

    async def main() -> None:
        async for accepted in run_replay(host, port, simulated, speed=speed, seconds=seconds):
            console.print(f"\r{accepted} messages acknowledged", end="")
        console.print()

    asyncio.run(main())


@app.command()
def news2(
    observation: Annotated[
        str | None, typer.Argument(help="JSON observation set; read from stdin if omitted.")
    ] = None,
) -> None:
    """NEWS2 of one observation set: keys respiratory_rate, spo2, spo2_scale, on_oxygen, systolic_bp, pulse,
    consciousness, temperature. Prints the total, band and each parameter's sub-score as JSON."""
    from tianfu.monitoring.scores import news2_from_mapping

    text = observation if observation is not None else sys.stdin.read()
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("the observation set must be a JSON object")
        result = news2_from_mapping(data)
    except (json.JSONDecodeError, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    sys.stdout.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")


@app.command()
def retention() -> None:
    """Apply the retention policy now: per-minute rows past TIANFU_MINUTE_RETENTION_DAYS become hourly
    means; hourly rows past TIANFU_HOURLY_RETENTION_DAYS are deleted. (tianfu serve does this hourly.)"""
    from tianfu.cli import load_settings
    from tianfu.core.kernel import Kernel
    from tianfu.monitoring.retention import apply_once
    from tianfu.monitoring.settings import get_monitoring_settings

    kernel = Kernel(load_settings())
    result = apply_once(kernel, get_monitoring_settings())
    sys.stdout.write(json.dumps(result.__dict__) + "\n")


@app.command("alarm-burden")
def alarm_burden(
    paths: Annotated[list[Path], typer.Argument(help=".psv / .csv files, directories, or a .tar.gz of .psv")],
    limit: Annotated[int, typer.Option(help="At most this many recordings (0: all).")] = 0,
) -> None:
    """Alarms per bed per day on recorded patients, with and without delays and hysteresis (JSON)."""
    from itertools import islice

    from tianfu.monitoring.burden import measure
    from tianfu.monitoring.replay import load

    recordings = load(paths)
    if not recordings:
        console.print("[red]no recordings found[/red]")
        raise typer.Exit(1)
    result = measure(islice(recordings, limit or None))
    sys.stdout.write(json.dumps(result) + "\n")


@app.command()
def evaluate(
    path: Annotated[Path, typer.Argument(help="Directory or .tar.gz of PhysioNet 2019 .psv stays")],
) -> None:
    """Hourly AUROC and Challenge utility of the sepsis model and of NEWS2, as JSON on the last line."""
    from tianfu.monitoring.evaluate import main

    raise typer.Exit(main([str(path)]))


def bench(
    beds: Annotated[int, typer.Option(help="Simulated bedside monitors.")] = 500,
    rate: Annotated[float, typer.Option(help="Reports per second per monitor.")] = 1.0,
    seconds: Annotated[float, typer.Option(help="How long to measure.")] = 30.0,
    warmup: Annotated[float, typer.Option(help="Seconds of load before measuring.")] = 10.0,
    postgres: Annotated[str, typer.Option(help="Store in this PostgreSQL instead of SQLite.")] = "",
    alarming: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of beds raising and clearing an alarm every 2 s.")
    ] = 1 / 3,
    hl7_processes: Annotated[
        int, typer.Option(min=0, help="HL7 listener processes of the server (TIANFU_HL7_PROCESSES).")
    ] = 0,
    top_of_hour_at: Annotated[
        float | None,
        typer.Option(
            help="Seconds into the measurement at which every bed closes its hour (sepsis scoring)."
        ),
    ] = None,
) -> None:
    """Drive the full path: monitors over MLLP → pipeline → central-station stream; latency and CPU."""
    from tianfu.monitoring.bench import run

    result = run(
        beds=beds,
        rate=rate,
        seconds=seconds,
        warmup=warmup,
        postgres=postgres or None,
        alarming=alarming,
        hl7_processes=hl7_processes,
        top_of_hour_at=top_of_hour_at,
    )
    sys.stdout.write(json.dumps(result) + "\n")
