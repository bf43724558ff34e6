"""A run directory is locked for the whole training: a second process is refused, a killed one does not block."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tfmedgan.engine.rundir import RunDirectory
from tfmedgan.errors import TfmedganError

_HOLDER = textwrap.dedent(
    """
    import sys, time
    from tfmedgan.engine.rundir import RunDirectory
    with RunDirectory(sys.argv[1]).lock():
        print("locked", flush=True)
        time.sleep(120)
    """
)


def _start_holder(path):
    process = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()  # blocks until the child holds the lock
    assert line.strip() == "locked", line
    return process


def _kill(process):
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    process.stdout.close()


def test_a_second_process_is_refused_with_the_holders_pid(tmp_path):
    run = RunDirectory.create(tmp_path, "run")
    holder = _start_holder(run.path)
    try:
        with pytest.raises(TfmedganError) as caught:
            with run.lock():
                pytest.fail("the lock was taken twice")
        message = str(caught.value)
        assert f"run directory {run.path} is in use by process {holder.pid}" in message
        assert "\n" not in message
    finally:
        _kill(holder)
    # the holder died with SIGKILL: its lock died with it
    with run.lock():
        assert (run.path / ".lock").read_text().split()[0] == str(os.getpid())


def test_a_stale_lock_of_a_killed_process_does_not_block(tmp_path):
    run = RunDirectory.create(tmp_path, "run")
    _kill(_start_holder(run.path))
    assert (run.path / ".lock").exists()  # the file stays, with the dead process's PID in it
    with run.lock():
        pass


def test_the_lock_is_released_at_exit_and_not_reentrant(tmp_path):
    run = RunDirectory.create(tmp_path, "run")
    with run.lock():
        with pytest.raises(TfmedganError, match=f"in use by process {os.getpid()}"):
            with RunDirectory(run.path).lock():
                pass
    with run.lock():  # released at the end of the first block
        pass
    with pytest.raises(RuntimeError):  # the block's own exceptions still propagate, lock released
        with run.lock():
            raise RuntimeError("boom")
    with run.lock():
        pass
