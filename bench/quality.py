"""Quality benchmark: does each model learn its task within a CPU budget, against simple baselines?

Each model is trained on built-in data through the CLI (``python run.py MODEL ... --max-steps N``,
then ``--resume RUN --max-steps M``) in child processes, and evaluated at ``--points`` moments of
its CPU budget on held-out built-in data that it never saw (protocols: bench/quality_protocols.py).
The budget is CPU time (user + system, both cores) of the training processes, so a busy machine
slows the run down but does not change its numbers much.

Usage::

    python bench/quality.py                                   # all models, default budgets, 4 points
    python bench/quality.py --models dcgan dcgan-demo --budget-minutes 8 --points 4
    python bench/quality.py --models cyclegan3d --budget-minutes cyclegan3d=60
    python bench/quality.py --quick                           # smoke run of every model, a few minutes

Outputs in ``--out`` (default ``bench/results/quality``, ``.../quality_quick`` with ``--quick``):
``quality.json`` (merged per model), one figure ``<model>.png`` per model (metrics against
CPU-minutes, baselines as dashed and goals as dotted horizontal lines), the runs, generated images
and logs under ``work/``. The table is printed at the end.

Default budgets (CPU-minutes; 2 cores give about 2 CPU-minutes per minute): dcgan, dcgan-demo and
stylegan2 20 (the issue's "10 minutes on 2 cores"), cyclegan3d 60, cyclegan-sr and
cyclegan-sr-cpu-demo 30.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from quality_protocols import Protocol, protocols, run_child, write_json  # noqa: E402
from tfmedgan.engine.cpu_features import cpu_has_native_bfloat16  # noqa: E402  (imports no TensorFlow)

DEFAULT_MODELS = ["dcgan", "stylegan2", "cyclegan3d", "cyclegan-sr"]
# CPU-minute budgets per model family. A variant (``cyclegan3d-cpu-ema``, ``dcgan-demo``) takes the
# budget of the longest family name it starts with, so a new protocol needs no entry here.
DEFAULT_BUDGETS = {"dcgan": 20.0, "stylegan2": 20.0, "cyclegan3d": 60.0, "cyclegan-sr": 30.0, "pix2pix3d": 20.0, "uda": 15.0}
QUICK_BUDGETS = {"dcgan": 0.6, "stylegan2": 1.5, "cyclegan3d": 4.0, "cyclegan-sr": 1.0, "pix2pix3d": 1.0, "uda": 1.0}
MIN_STEPS_PER_SEGMENT = 2


def family_budget(name: str, table: dict[str, float]) -> float:
    """The budget of ``name``: its own entry, else that of the longest family ``name`` starts with."""
    families = [family for family in table if name == family or name.startswith(family + "-")]
    if not families:
        raise SystemExit(f"error: no default budget for {name!r}; pass --budget-minutes {name}=MINUTES")
    return table[max(families, key=len)]


def _budgets(values: list[str], models: list[str], quick: bool) -> dict[str, float]:
    table = QUICK_BUDGETS if quick else DEFAULT_BUDGETS
    explicit: dict[str, float] = {}
    for value in values:
        if "=" in value:
            name, minutes = value.split("=", 1)
            if name not in models:
                raise SystemExit(f"error: {name!r} in --budget-minutes is not among --models")
            explicit[name] = float(minutes)
        else:
            explicit.update({name: float(value) for name in models})
    return {name: explicit[name] if name in explicit else family_budget(name, table) for name in models}


def train_and_evaluate(protocol: Protocol, budget_minutes: float, points: int, work: Path) -> dict:
    """Train ``protocol``'s model in ``points`` segments of its CPU budget; evaluate after each."""
    log = work / "logs" / f"{protocol.name}.log"
    run_name = f"{protocol.name}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    run_dir = work / "runs" / run_name
    rows, cpu_total, wall_total, steps = [], 0.0, 0.0, 0
    seconds_per_step = protocol.cpu_seconds_per_step
    for point in range(1, points + 1):
        target = 60.0 * budget_minutes * point / points
        new_steps = max(MIN_STEPS_PER_SEGMENT, int(round((target - cpu_total) / seconds_per_step)))
        steps += new_steps
        if point == 1:
            arguments = ["run.py", *protocol.train_arguments(work, run_name), "--max-steps", steps]
        else:
            arguments = ["run.py", protocol.model, "--resume", run_dir, "--max-steps", steps, "--no-progress"]
        cpu, wall = run_child(arguments, log)
        cpu_total, wall_total = cpu_total + cpu, wall_total + wall
        reached = _steps_reached(run_dir)
        ended = reached is not None and reached < steps
        if ended:
            # the run ended at its --epochs before this point of the budget: score what it reached, then stop
            print(f"[{protocol.name}] the run ended at its last epoch: step {reached} of the {steps} asked", flush=True)
            steps = reached
            if rows and rows[-1]["steps"] == reached:  # it had ended exactly at the last point: scored already
                break
        seconds_per_step = cpu_total / steps
        started = time.monotonic()
        scores = protocol.evaluate(run_dir, work, f"step{steps:06d}")
        row = {"point": point, "steps": steps, "cpu_minutes": round(cpu_total / 60, 2),
               "wall_minutes": round(wall_total / 60, 2), **scores,
               "evaluation_seconds": round(time.monotonic() - started, 1)}
        rows.append(row)
        print(f"[{protocol.name}] point {point}/{points}: " + ", ".join(
            f"{key} {value}" for key, value in row.items() if key not in ("point", "grid")), flush=True)
        if ended:
            break
    command = ["python", "run.py", *map(str, protocol.train_arguments(work, run_name))]
    return {"run_dir": str(run_dir), "command": " ".join(command), "points": rows,
            "cpu_seconds_per_step": round(seconds_per_step, 3)}


def _steps_reached(run_dir: Path) -> int | None:
    """The step a run's last training process ended at (its ``summary.json``), if it wrote one."""
    try:
        return int(json.loads((run_dir / "summary.json").read_text())["steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def draw_figure(name: str, result: dict, metrics: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [metric for metric in metrics if any(metric in row for row in result["points"])]
    columns = min(3, len(metrics))
    rows = -(-len(metrics) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.4 * columns, 3.4 * rows), squeeze=False)
    minutes = [row["cpu_minutes"] for row in result["points"]]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, metric in zip(axes.ravel(), metrics):
        values = [row.get(metric) for row in result["points"]]
        axis.plot(minutes, values, "o-", color="black", label=name)
        for index, (baseline, scores) in enumerate(result["baselines"].items()):
            if metric in scores:
                axis.axhline(scores[metric], linestyle="--", color=colours[index % len(colours)], label=baseline)
        goal = result.get("goals", {}).get(metric)
        if isinstance(goal, (list, tuple)):
            axis.axhspan(goal[0], goal[1], color="red", alpha=0.08, label="goal band")
        elif goal is not None:
            axis.axhline(goal, linestyle=":", color="red", label="goal")
        axis.set_xlabel("training CPU-minutes")
        axis.set_title(metric, fontsize=10)
        axis.set_xlim(left=0)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="best")
    spare = axes.ravel()[len(metrics):]
    for axis in spare:
        axis.axis("off")
    grid = result["points"][-1].get("grid")
    if len(spare) and grid and Path(grid).is_file():
        spare[0].imshow(plt.imread(grid), cmap="gray")
        spare[0].set_title(f"16 fakes at step {result['points'][-1]['steps']} (each scaled to its range)", fontsize=9)
    last = result["points"][-1]
    figure.suptitle(f"{name}: {last['steps']} steps, {last['cpu_minutes']} training CPU-minutes "
                    f"(budget {result['budget_cpu_minutes']}); scored on held-out data", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def print_table(results: dict[str, dict]) -> None:
    print()
    print(f"{'model':<22}{'point':<14}{'steps':>7}{'CPU-min':>9}  metrics")
    for name, result in results.items():
        main = result["main_metric"]
        for row in result["points"]:
            rest = ", ".join(f"{k} {v}" for k, v in row.items()
                             if k not in ("point", "steps", "cpu_minutes", "wall_minutes", "grid", "evaluation_seconds"))
            print(f"{name:<22}{'train ' + str(row['point']):<14}{row['steps']:>7}{row['cpu_minutes']:>9}  {rest}")
        for baseline, scores in result["baselines"].items():
            rest = ", ".join(f"{k} {v}" for k, v in scores.items())
            print(f"{name:<22}{'baseline':<14}{'':>7}{'':>9}  {baseline}: {rest}")
        last = result["points"][-1].get(main)
        goals = result.get("goals", {})
        if isinstance(goals.get(main), (int, float)):
            print(f"{name:<22}{'goal':<14}{'':>7}{'':>9}  {main} >= {goals[main]:.4g}: "
                  f"{'met' if last is not None and last >= goals[main] else 'not met'} ({last})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    known = protocols()
    parser.add_argument("--models", nargs="+", default=None, choices=sorted(known),
                        help=f"models to run (default: {' '.join(DEFAULT_MODELS)})")
    parser.add_argument("--budget-minutes", nargs="+", default=[], metavar="[MODEL=]MINUTES",
                        help="training CPU-minutes per model: one number for all, or MODEL=MINUTES")
    parser.add_argument("--points", type=int, default=None, help="evaluation points per budget (default: 4, quick: 2)")
    parser.add_argument("--out", default=None, help="output folder (default: bench/results/quality[_quick])")
    parser.add_argument("--quick", action="store_true", help="tiny budgets: a smoke run of every model in a few minutes")
    parser.add_argument("--precision", choices=("float32", "mixed_bfloat16"), default=None,
                        help="train the protocols that use mixed_bfloat16 (the 3D translators) in this precision instead "
                             "(float32 on a CPU without native bfloat16)")
    parser.add_argument("--cpu-seconds-per-step", type=float, default=None,
                        help="the first segment's estimate of a step's CPU time, instead of the protocol's (later "
                             "segments use the measured one)")
    parser.add_argument("--table", action="store_true", help="only print the table of OUT/quality.json (every model in it)")
    args = parser.parse_args(argv)
    models = args.models or DEFAULT_MODELS
    budgets = _budgets(args.budget_minutes, models, args.quick)
    points = args.points or (2 if args.quick else 4)
    out = Path(args.out or ROOT / "bench" / "results" / ("quality_quick" if args.quick else "quality"))
    summary_path = out / "quality.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {"models": {}}
    if args.table:
        print_table(summary["models"])
        return 0
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    native_bfloat16 = cpu_has_native_bfloat16()
    if native_bfloat16 is False:
        print("note: this CPU has no native bfloat16 (no AVX512-BF16 or AMX-BF16 flag): the protocols that train in "
              "mixed_bfloat16 (the 3D models) run it emulated, several times slower than float32, so their CPU budgets "
              "hold fewer steps than on the machines of docs/quality.md", flush=True)
    results = {}
    for name in models:
        protocol = known[name]
        protocol.quick = args.quick
        if args.cpu_seconds_per_step:
            protocol.cpu_seconds_per_step = args.cpu_seconds_per_step
        if args.precision and hasattr(protocol, "precision"):
            protocol.precision = args.precision
        if args.quick and hasattr(protocol, "n_train"):
            protocol.n_train, protocol.n_heldout = 2, 1
        if args.quick and hasattr(protocol, "vae_epochs"):
            protocol.vae_epochs = 2
        started = time.monotonic()
        protocol.prepare(work)
        baselines = protocol.baselines(work)
        print(f"[{name}] data ready ({time.monotonic() - started:.0f} s); baselines: {json.dumps(baselines)}", flush=True)
        result = train_and_evaluate(protocol, budgets[name], points, work)
        result.update({"budget_cpu_minutes": budgets[name], "baselines": baselines, "goals": protocol.goal_lines(baselines),
                       "main_metric": protocol.main_metric, "quick": args.quick, "cpu_native_bfloat16": native_bfloat16,
                       "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
                       "precision": getattr(protocol, "precision", None),
                       "date": f"{datetime.datetime.now():%Y-%m-%d %H:%M}"})
        if hasattr(protocol, "shapes"):
            result["shapes"] = protocol.shapes()
        figure = out / f"{name}.png"
        draw_figure(name, result, protocol.figure_metrics(), figure)
        result["figure"] = str(figure)
        results[name] = result
        # Re-read before writing: another bench process may have added its models meanwhile.
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {"models": {}}
        summary["models"][name] = result
        write_json(summary_path, summary)
    print_table(results)
    print(f"\nwrote {summary_path} and " + ", ".join(str(out / f"{name}.png") for name in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
