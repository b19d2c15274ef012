"""Helpers shared by the command tests."""

from __future__ import annotations

import signal
import subprocess


def stop_server(proc: "subprocess.Popen") -> None:
    """SIGTERM a served ``fna-deploy serve`` process and wait; SIGKILL it after 60 s."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
