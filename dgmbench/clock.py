"""Process clocks for the timing records: wall-clock and CPU seconds, the machine's load, the process's age.

A wall-clock time alone moves with the machine's load (under load the ARM's training read 108 s for 37.8 CPU
seconds), so every timing dgmbench records carries, beside the wall seconds, this process's CPU seconds (all its
threads, user + system), its torch threads and the load average when the stretch ended. A reader compares CPU
seconds across machine states, and wall seconds only where the load averages agree.

Standard library only: the trainer imports it, and a training job's start-up is one of the things it measures.
The typed form of these records is :class:`dgmbench.metrics.timing.Timing`.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages (runnable processes), or None where the OS has none."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def torch_threads() -> int | None:
    """Torch's intra-op threads, when torch is loaded (it is, wherever something worth timing runs)."""
    import sys

    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else None


class Stopwatch:
    """Wall-clock and process CPU seconds of the stretch between :meth:`start` and :meth:`stop` (or a ``with``)."""

    def __init__(self):
        self.wall_seconds: float | None = None
        self.cpu_seconds: float | None = None
        self._t0 = (0.0, 0.0)

    def start(self) -> "Stopwatch":
        self._t0 = (time.perf_counter(), time.process_time())
        return self

    def stop(self) -> "Stopwatch":
        self.wall_seconds = time.perf_counter() - self._t0[0]
        self.cpu_seconds = time.process_time() - self._t0[1]
        return self

    def __enter__(self) -> "Stopwatch":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def record(self) -> dict:
        """The timing record (the fields of :class:`~dgmbench.metrics.timing.Timing`), load average read now."""
        return {"wall_seconds": self.wall_seconds, "cpu_seconds": self.cpu_seconds, "threads": torch_threads(),
                "load_average": load_average()}


def process_age_seconds() -> float | None:
    """Seconds since this process started (Linux: its start time in /proc against the boot clock, 10 ms
    resolution); None where that cannot be read. It includes the interpreter's own start and every import."""
    try:
        stat = Path("/proc/self/stat").read_text()
        start_ticks = int(stat[stat.rindex(")") + 2 :].split()[19])  # field 22, starttime, in clock ticks after boot
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def startup_record() -> dict:
    """The timing record of this process's start-up so far: from the process's start to now (wall), and the CPU
    seconds it has used (imports, reading data, building the model)."""
    return {"wall_seconds": process_age_seconds(), "cpu_seconds": time.process_time(), "threads": torch_threads(),
            "load_average": load_average()}


def machine(device: str = "cpu") -> str:
    """What ran it, in words: the device, the CPU model and its logical CPUs, e.g.
    ``"cpu: Intel(R) Xeon(R) Processor, 2 CPUs (x86_64)"``; a GPU's name is prepended for CUDA devices."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    host = f"{cpu}, {os.cpu_count()} CPUs ({platform.machine()})"
    if str(device).startswith("cuda"):
        import torch

        return f"{device}: {torch.cuda.get_device_name(torch.device(device))}; host {host}"
    return f"{device}: {host}"
