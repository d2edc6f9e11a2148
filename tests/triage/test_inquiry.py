"""The inquiry model: learning by counting, the next question, stopping, files, and the evaluate CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tianfu.cli import app
from tianfu.triage.catalogue import choose_model, load_model, model_names
from tianfu.triage.inquiry import Case, InquiryModel, evaluate, read_cases, simulate

FIXTURE = Path(__file__).parent / "fixtures" / "dxy_sample.json"


def toy_cases() -> list[Case]:
    # Flu and gastroenteritis both start with fever; only a question about diarrhoea tells them apart.
    flu = [Case("flu", {"fever": True}, {"cough": True, "diarrhoea": False}) for _ in range(10)]
    gastro = [Case("gastro", {"fever": True}, {"diarrhoea": True, "cough": False}) for _ in range(10)]
    return flu + gastro


def test_the_most_informative_question_comes_first_and_answers_decide() -> None:
    model = InquiryModel.fit(toy_cases(), name="toy", alpha=0.5)
    explicit = {"fever": True}
    posterior = model.posterior(explicit, {})
    assert posterior == pytest.approx([0.5, 0.5], abs=1e-9)
    assert model.next_question(explicit, {}, stop_confidence=0.99) in {"cough", "diarrhoea"}
    ranked = model.ranked(explicit, {"diarrhoea": True})
    assert ranked[0][0] == "gastro"
    assert ranked[0][1] > 0.9
    assert sum(p for _, p in ranked) == pytest.approx(1.0)


def test_stops_when_confident_at_the_cap_and_never_repeats() -> None:
    model = InquiryModel.fit(toy_cases(), name="toy", alpha=0.5)
    assert model.next_question({"fever": True}, {"diarrhoea": True}, stop_confidence=0.9) is None
    assert model.next_question({"fever": True}, {}, max_turns=0) is None
    asked: dict[str, bool | None] = {}
    while (q := model.next_question({"fever": True}, asked, stop_confidence=1.01)) is not None:
        assert q not in asked
        assert q != "fever"
        asked[q] = None
    assert set(asked) == {"cough", "diarrhoea"}


def test_simulation_follows_the_standard_protocol() -> None:
    model = InquiryModel.fit(toy_cases(), name="toy", alpha=0.5)
    dialogue = simulate(model, Case("gastro", {"fever": True}, {"diarrhoea": True}), stop_confidence=0.9)
    assert dialogue.correct
    assert dialogue.turns <= 2
    assert dialogue.implicit_total == 1
    result = evaluate(model, toy_cases(), stop_confidence=0.9)
    assert result["accuracy"] == 1.0
    assert result["n"] == 20
    assert 0 < result["avg_turns"] <= 2


def test_information_gain_is_mutual_information() -> None:
    model = InquiryModel.fit(toy_cases(), name="toy", alpha=0.5)
    posterior = model.posterior({"fever": True}, {})
    gains = model.information_gains(posterior, ["fever"])
    # By hand for one symptom: entropy now minus the expected entropy after each answer.
    i = model.symptom_index["diarrhoea"]
    joint = posterior[:, None] * model.answer_probs[:, i, :]
    p_answer = joint.sum(axis=0)
    after = sum(
        p_answer[a] * -np.sum((joint[:, a] / p_answer[a]) * np.log(joint[:, a] / p_answer[a]))
        for a in range(3)
    )
    assert gains[i] == pytest.approx(np.log(2) - after)
    assert gains[model.symptom_index["fever"]] == -np.inf


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    model = InquiryModel.fit(toy_cases(), name="toy", alpha=0.5)
    model.save(tmp_path / "toy")
    loaded = InquiryModel.load(tmp_path / "toy")
    assert loaded.symptoms == model.symptoms
    assert loaded.diseases == model.diseases
    assert loaded.posterior({"fever": True}, {"cough": True}) == pytest.approx(
        model.posterior({"fever": True}, {"cough": True}), rel=1e-5
    )


def test_every_benchmark_has_a_shipped_model_with_its_numbers() -> None:
    assert {"dxy", "mz4-acl2018", "mz4-1733", "mz10", "sd90", "mdd"} <= set(model_names())
    for name in model_names():
        cv = load_model(name).metadata["cross_validation"]
        assert 0 < cv["accuracy"] <= 1
        assert cv["avg_turns"] <= load_model(name).max_turns


def test_the_file_picks_its_model() -> None:
    assert choose_model(read_cases(FIXTURE)).name == "dxy"
    with pytest.raises(LookupError):
        choose_model([Case("nothing-we-know", {}, {})])


def test_evaluate_command_prints_json_on_the_last_line() -> None:
    result = CliRunner().invoke(app, ["triage", "evaluate", "--goals", str(FIXTURE), "--max-turns", "5"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["model"] == "dxy"
    assert summary["n"] == 21
    assert summary["max_turns"] == 5
    assert 0.5 <= summary["accuracy"] <= 1
    assert summary["avg_turns"] <= 5


def test_evaluate_command_refuses_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{}", encoding="utf-8")
    result = CliRunner().invoke(app, ["triage", "evaluate", "--goals", str(bad)])
    assert result.exit_code == 2
