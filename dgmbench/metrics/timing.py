"""Timing records as typed results: what the trainer and the evaluation runner measured, and on what machine.

Not an evaluator. The raw records come from :mod:`dgmbench.clock` (the trainer writes them into the checkpoint's
training record, :func:`dgmbench.evaluate.evaluate` into metrics.json's ``timing`` section); here they become
:class:`Timing` objects for the tables. Every field is optional, so files written before a field existed still
parse, and the tables print "not measured" for what they lack.

Timings differ between identical reruns. They live under keys named ``timing`` or ending in ``_seconds`` /
``_per_s``, which :func:`dgmbench.evaluate.without_timing` drops before the determinism tests compare two runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import Result


@dataclass
class Timing(Result):
    """One timed stretch of work: wall-clock and process CPU seconds, the threads, and the machine's load."""

    wall_seconds: float | None = None  # elapsed wall-clock seconds (time.perf_counter)
    cpu_seconds: float | None = None  # CPU seconds of this process, all threads, user + system (time.process_time)
    threads: int | None = None  # torch intra-op threads: cpu_seconds ≤ wall_seconds × threads, up to bookkeeping threads
    load_average: list[float] | None = None  # os.getloadavg() when the stretch ended: 1-, 5-, 15-minute averages

    @property
    def load_1min(self) -> float | None:
        return self.load_average[0] if self.load_average else None


@dataclass
class TrainingTiming(Result):
    """The trainer's timings (``TrainingResult.timing``)."""

    training: Timing  # the epochs (training steps and validation scoring), summed over every resumed process
    startup: Timing | None = None  # the last process that trained: from its start to its first batch (imports, data, model)
    epoch_seconds: list[float] = field(default_factory=list)  # cumulative training wall seconds at the end of each epoch
    machine: str | None = None  # what trained it (clock.machine)


@dataclass
class EvaluationTiming(Result):
    """metrics.json's ``timing`` section, typed (:meth:`from_section`)."""

    train_seconds: float | None = None  # the training's wall seconds (from the checkpoint's record)
    evaluators: dict[str, Timing] = field(default_factory=dict)  # evaluator → its timing, in this evaluation
    startup: Timing | None = None  # the evaluating process from its start to its first evaluator (imports, checkpoint, data)
    machine: str | None = None  # what evaluated it (clock.machine)
    in_training_process: bool = False  # evaluated by the process that trained the run (startup: from the evaluation's start)

    @classmethod
    def from_section(cls, section: dict) -> "EvaluationTiming":
        """Parse a ``timing`` section. Files written before the CPU seconds were recorded hold only flat
        ``<evaluator>_seconds`` wall times: those become Timings with the rest not measured."""
        section = dict(section or {})
        flat = {k[: -len("_seconds")]: v for k, v in section.items()
                if k.endswith("_seconds") and k != "train_seconds" and isinstance(v, (int, float))}
        typed = cls.from_dict({k: v for k, v in section.items() if k in ("train_seconds", "evaluators", "startup",
                                                                           "machine", "in_training_process")}, where="timing")
        for name, wall in flat.items():
            typed.evaluators.setdefault(name, Timing(wall_seconds=float(wall)))
        return typed

