"""``tianfu triage``: evaluate the inquiry models and the department classifier, assess urgency."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

app = typer.Typer(help="Intelligent guidance and triage.", no_args_is_help=True)
console = Console(stderr=True)


@app.command()
def evaluate(
    goals: Annotated[
        Path, typer.Option(help="Benchmark file: a JSON list of {disease, explicit, implicit}.")
    ],
    max_turns: Annotated[int | None, typer.Option(help="Turn cap (default: the model's, 20).")] = None,
    model: Annotated[str, typer.Option(help="A shipped model; default: the one matching the file.")] = "",
) -> None:
    """Standard protocol: start from `explicit`, the simulated patient answers from `implicit`, "not sure"
    otherwise. Prints accuracy, implicit-symptom recall and turns as JSON on the last line."""
    from tianfu.triage.catalogue import choose_model, load_model
    from tianfu.triage.inquiry import read_cases, simulate

    try:
        cases = read_cases(goals)
        chosen = load_model(model) if model else choose_model(cases)
    except (OSError, ValueError, KeyError, LookupError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    cap = chosen.max_turns if max_turns is None else max_turns
    found = total = turns = correct = 0
    with Progress(
        TextColumn(f"{chosen.name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("cases", total=len(cases))
        for case in cases:
            dialogue = simulate(chosen, case, max_turns=cap)
            correct += dialogue.correct
            turns += dialogue.turns
            found += dialogue.implicit_found
            total += dialogue.implicit_total
            progress.advance(task)
    n = len(cases)
    result = {
        "model": chosen.name,
        "n": n,
        "accuracy": round(correct / n, 4) if n else 0.0,
        "symptom_recall": round(found / total, 4) if total else 0.0,
        "avg_turns": round(turns / n, 2) if n else 0.0,
        "max_turns": cap,
    }
    sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")


@app.command("evaluate-departments")
def evaluate_departments(
    jsonl: Annotated[
        Path, typer.Option(help="Lines of {department, title, ask} (Toyhom internal medicine).")
    ],
) -> None:
    """Top-1 and top-3 accuracy of the question classifier, as JSON on the last line."""
    from tianfu.triage.departments import evaluate_departments as run

    try:
        result = run(jsonl)
    except (OSError, ValueError, KeyError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")


@app.command()
def models() -> None:
    """The shipped inquiry models with their cross-validated numbers."""
    from tianfu.triage.catalogue import load_model, model_names

    for name in model_names():
        model = load_model(name)
        cv = model.metadata.get("cross_validation", {})
        sys.stdout.write(
            json.dumps(
                {
                    "model": name,
                    "diseases": len(model.diseases),
                    "symptoms": len(model.symptoms),
                    "language": model.language,
                    **cv,
                },
                ensure_ascii=False,
            )
            + "\n"
        )


def bench(
    patients: Annotated[int, typer.Option(help="Simulated patients per model.")] = 200,
) -> None:
    """Per-turn latency of the interview engine (answer in, next question out) and of the final result
    (differential, departments, urgency), for every shipped model; JSON on the last line."""
    import random
    import time

    import numpy as np

    from tianfu.triage import interview as engine
    from tianfu.triage.catalogue import load_model, model_names
    from tianfu.triage.departments import DepartmentRouter

    started = time.perf_counter()
    router = DepartmentRouter.load()
    router_load_s = round(time.perf_counter() - started, 3)
    rng = random.Random(0)  # noqa: S311 - a reproducible simulation, not a secret
    turn_ms: list[float] = []
    result_ms: list[float] = []
    load_s: dict[str, float] = {}
    for name in model_names():
        started = time.perf_counter()
        load_model.cache_clear()
        model = load_model(name)
        load_s[name] = round(time.perf_counter() - started, 3)
        for _ in range(patients):
            # A patient drawn from the model itself: a disease, then answers from its answer distribution.
            d = rng.choices(range(len(model.diseases)), weights=np.exp(model.log_prior))[0]
            likely = np.argsort(-model.answer_probs[d, :, 0])[:3]
            state = engine.start(name, "nurse", language=model.language)
            state = engine.Interview.from_json(
                {**state.to_json(), "explicit": {model.symptoms[int(i)]: True for i in likely[:1]}}
            )
            state = engine.advance(state)
            while state.pending is not None:
                i = model.symptom_index[state.pending]
                reply = rng.choices((True, False, None), weights=model.answer_probs[d, i])[0]
                started = time.perf_counter()
                state = engine.answer(state, state.pending, reply)
                turn_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            engine.result(state, router=router)
            result_ms.append((time.perf_counter() - started) * 1000)
    turns = np.array(turn_ms)
    results = np.array(result_ms)
    summary = {
        "turns": len(turn_ms),
        "turn_p50_ms": round(float(np.percentile(turns, 50)), 3),
        "turn_p99_ms": round(float(np.percentile(turns, 99)), 3),
        "result_p50_ms": round(float(np.percentile(results, 50)), 3),
        "result_p99_ms": round(float(np.percentile(results, 99)), 3),
        "model_load_s": load_s,
        "router_load_s": router_load_s,
    }
    sys.stdout.write(json.dumps(summary) + "\n")
