"""A training process killed with SIGKILL mid-run resumes from its last atomic checkpoint."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tfmedgan.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_kill_9_then_resume_finishes_the_run(png_folder, tmp_path):
    out = tmp_path / "runs"
    args = [sys.executable, str(ROOT / "run.py"), "dcgan", str(png_folder), str(out), "--resolution", "32",
            "--latent", "8", "--batch", "4", "--epochs", "10", "--checkpoint-steps", "3", "--name", "k",
            "--no-progress"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = out / "k" / "checkpoints"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list(checkpoints.glob("ckpt-*.npz"))) < 2:
            time.sleep(0.2)
        assert process.poll() is None, "training ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    (checkpoints / ".tmp-half-written.npz").write_bytes(b"partial")  # as if killed inside a write
    assert main(["dcgan", "--resume", str(out / "k"), "--no-progress"]) == 0
    assert not list(checkpoints.glob(".tmp-*"))
    rows = np.loadtxt(out / "k" / "losses.csv", delimiter=",", skiprows=1)
    assert list(rows[:, 0].astype(int)) == list(range(1, 61))  # 24 images / 4 x 10 epochs, no gap or repeat
    assert (out / "k" / "models" / "generator.keras").exists()
