"""Scheduling priority of the engine's own processes, below the front end that feeds them.

vLLM runs its engine core and its workers in child processes, and on CPU they spin while
they wait: a worker busy-polls vLLM's shared-memory queue for a second after each message
(`SpinCondition`), and OpenMP threads spin at the end of each parallel region. Where the
front end (gRPC, canonicalization, tokenization) shares cores with them, as on any CPU
deployment, that spinning takes turns from the front end at equal priority: requests reach
the engine late and in small steps, and a small step costs the engine more per query. With
the engine's processes at a lower priority (a higher nice value), spinning gives way to the
front end whenever it has work, and the engine still has every core when it does not.
"""

from __future__ import annotations

import os
import sys

import psutil

from ..settings import MAX_NICENESS

__all__ = ["descendants", "lower_priority"]


def descendants() -> set[int]:
    """The process ids of every live descendant of this process."""
    return {child.pid for child in psutil.Process().children(recursive=True)}


def lower_priority(pids: set[int], by: int) -> dict[int, int]:
    """Raise the niceness of each process in `pids`, and of every thread in it, by `by` (at
    most to 19); returns each changed process's new niceness.

    On Linux niceness belongs to each thread, so every thread of a process is changed; threads
    started afterwards inherit their creator's. A process that has ended is skipped. Lowering
    priority needs no privilege.
    """
    changed: dict[int, int] = {}
    for pid in sorted(pids):
        try:
            process = psutil.Process(pid)
            # On other systems the process id names the whole process.
            targets = [t.id for t in process.threads()] if sys.platform == "linux" else [pid]
            value = min(MAX_NICENESS, process.nice() + by)
            for target in targets:
                try:
                    os.setpriority(os.PRIO_PROCESS, target, value)
                except ProcessLookupError:  # a thread that ended meanwhile
                    continue
            changed[pid] = value
        except psutil.NoSuchProcess:
            continue
    return changed
