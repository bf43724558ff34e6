"""Tests for bench/quality.py's training loop: points of a CPU budget, and runs that end at their epochs."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def quality():
    """bench/quality.py loaded from its file (bench/ is a folder of scripts, not a package)."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("bench_quality", BENCH / "quality.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


class FakeProtocol:
    """Stands in for a quality protocol: no training, scores the step it is asked about."""

    name = "fake"
    model = "fake"
    cpu_seconds_per_step = 1.0

    def __init__(self) -> None:
        self.evaluated: list[str] = []

    def train_arguments(self, work: pathlib.Path, run_name: str) -> list[str]:
        return ["fake", str(work / "runs"), "--name", run_name]

    def evaluate(self, run_dir: pathlib.Path, work: pathlib.Path, tag: str) -> dict[str, float]:
        self.evaluated.append(tag)
        return {"psnr": float(json.loads((run_dir / "summary.json").read_text())["steps"])}


def fake_child(last_step: int):
    """A ``run_child`` whose run trains to ``--max-steps`` but stops at ``last_step`` (its last epoch),
    one CPU-second a step, and writes ``summary.json`` as the engine does."""
    state = {"step": 0, "calls": 0}

    def run_child(arguments, log):
        arguments = [str(a) for a in arguments]
        asked = int(arguments[arguments.index("--max-steps") + 1])
        if "--resume" in arguments:
            run_dir = pathlib.Path(arguments[arguments.index("--resume") + 1])
        else:
            run_dir = pathlib.Path(arguments[2]) / arguments[arguments.index("--name") + 1]
        run_dir.mkdir(parents=True, exist_ok=True)
        before = state["step"]
        state["step"] = min(asked, last_step)
        state["calls"] += 1
        (run_dir / "summary.json").write_text(json.dumps({"steps": state["step"]}))
        return float(state["step"] - before), 1.0

    return run_child, state


def test_points_split_the_budget(quality, tmp_path, monkeypatch):
    run_child, state = fake_child(last_step=10_000)
    monkeypatch.setattr(quality, "run_child", run_child)
    protocol = FakeProtocol()
    result = quality.train_and_evaluate(protocol, budget_minutes=4.0, points=4, work=tmp_path)
    assert [row["steps"] for row in result["points"]] == [60, 120, 180, 240]
    assert [row["psnr"] for row in result["points"]] == [60.0, 120.0, 180.0, 240.0]
    assert state["calls"] == 4


def test_a_run_that_ends_at_its_epochs_is_scored_at_the_step_it_reached(quality, tmp_path, monkeypatch):
    # the budget asks for 60 / 120 / 180 / 240 steps; the run's --epochs end it at step 150
    run_child, state = fake_child(last_step=150)
    monkeypatch.setattr(quality, "run_child", run_child)
    protocol = FakeProtocol()
    result = quality.train_and_evaluate(protocol, budget_minutes=4.0, points=4, work=tmp_path)
    assert [row["steps"] for row in result["points"]] == [60, 120, 150]
    assert [row["psnr"] for row in result["points"]] == [60.0, 120.0, 150.0]
    assert protocol.evaluated[-1] == "step000150"
    assert state["calls"] == 3  # no further segment after the run ended
    assert result["cpu_seconds_per_step"] == pytest.approx(1.0)


def test_a_run_that_ends_exactly_at_a_point_is_not_scored_twice(quality, tmp_path, monkeypatch):
    # the run's --epochs end it at step 120, exactly the second point: the third segment trains no step
    run_child, state = fake_child(last_step=120)
    monkeypatch.setattr(quality, "run_child", run_child)
    protocol = FakeProtocol()
    result = quality.train_and_evaluate(protocol, budget_minutes=4.0, points=4, work=tmp_path)
    assert [row["steps"] for row in result["points"]] == [60, 120]
    assert protocol.evaluated == ["step000060", "step000120"]
    assert state["calls"] == 3  # the third segment found the run at its end
