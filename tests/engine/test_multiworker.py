"""MultiWorkerMirroredStrategy with two real local worker processes (``TF_CONFIG`` on localhost
ports, ``--strategy multiworker``): a tiny DCGAN trains 2 steps, only the chief (worker 0) writes
the run directory, and ``--resume`` continues the run on both workers (steps 3 and 4)."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 150  # seconds per pair of workers (the two usually finish in 20-40 s)


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("localhost", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def write_slices(folder: Path, count: int = 8) -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        Image.fromarray(rng.integers(0, 255, (32, 32)).astype(np.uint8)).save(folder / f"slice_{index}.png")
    return folder


def run_workers(arguments: list[str], workdir: Path) -> list[subprocess.CompletedProcess]:
    """Start worker 0 and worker 1 with ``run.py dcgan ARGUMENTS``; wait for both (killed on timeout)."""
    ports = free_ports(2)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    processes, logs = [], []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
                   TF_CPP_MIN_LOG_LEVEL="2", NEPTUNE_MODE="debug", CUDA_VISIBLE_DEVICES="")
        log = open(workdir / f"worker{index}-{time.monotonic_ns()}.log", "w+")
        logs.append(log)
        processes.append(subprocess.Popen([sys.executable, str(REPO / "run.py"), "dcgan", *arguments], cwd=workdir,
                                          env=env, stdout=log, stderr=subprocess.STDOUT, text=True))
    deadline = time.monotonic() + TIMEOUT
    try:
        for process in processes:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    results = []
    for process, log in zip(processes, logs):
        log.seek(0)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, log.read(), ""))
        log.close()
    return results


def loss_steps(run: Path) -> list[int]:
    with open(run / "losses.csv") as stream:
        return [int(row["step"]) for row in csv.DictReader(stream)]


def test_two_local_workers_train_only_the_chief_writes_and_resume_works(tmp_path):
    data = write_slices(tmp_path / "data")
    out = tmp_path / "runs"
    common = ["--strategy", "multiworker", "--no-progress", "--checkpoint-minutes", "0"]
    first = run_workers([str(data), str(out), "--name", "mw", "--resolution", "32", "--latent", "8", "--batch", "4",
                         "--epochs", "1", "--n-samples", "4", *common], tmp_path)
    for index, result in enumerate(first):
        assert result.returncode == 0, f"worker {index} failed:\n{result.stdout[-3000:]}"
    run = out / "mw"
    assert sorted(p.name for p in out.iterdir()) == ["mw"]  # worker 1 wrote nothing next to the chief's run
    assert loss_steps(run) == [1, 2]  # 8 images / global batch 4, logged once (by the chief)
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["ckpt-000000002.npz"]
    assert {p.name for p in (run / "models").iterdir()} == {"generator.keras", "discriminator.keras"}
    config = json.loads((run / "config.json").read_text())
    assert config["strategy"] == "multiworker" and config["batch"] == 4
    assert str(run) in first[0].stdout and str(out) not in first[1].stdout
    assert "the chief writes the run directory" in first[1].stdout  # worker 1 names no scratch folder
    assert "tfmedgan-worker-" not in first[1].stdout

    second = run_workers(["--resume", str(run), "--epochs", "2", *common], tmp_path)
    for index, result in enumerate(second):
        assert result.returncode == 0, f"worker {index} failed on resume:\n{result.stdout[-3000:]}"
        assert "(epoch 2, step 2)" in result.stdout, f"worker {index} did not resume from step 2"
    assert loss_steps(run) == [1, 2, 3, 4]
    assert (run / "checkpoints" / "ckpt-000000004.npz").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["mw"]
