"""The CPU a step can actually get on a shared machine, and torch threads that wait without spinning.

torch runs its intra-op work on a team of OpenMP threads (GNU libgomp) that meet at a barrier after
every operation, thousands of times a training step. By default a thread that reaches the barrier
first spins for about 300,000 rounds before it sleeps. On a machine shared with other sessions (Linux
gives each session an equal share of the CPU), the spinning eats the share the thread it waits for
needs, and every barrier waits for both threads to be scheduled at once: with two busy loops in other
sessions a training step on 2 cores went from 125 ms to 13.9 s (111x, issue 39). So:

- waiting threads sleep (`OMP_WAIT_POLICY=PASSIVE`), which OpenMP reads once, when torch loads it:
  `pipeline_steps/__init__.py` sets it before any step imports torch (a value already set is kept);
- the trainer runs as many threads as there are cores nobody else wants, re-checked before every step
  (`ThreadGovernor`): the usable cores (affinity, and a cgroup's CPU quota) less the tasks of other
  processes that are runnable right now, at least one. One thread never waits at a barrier.

bench/contention.py measures both, idle and against two busy loops in sessions of their own.
"""

from __future__ import annotations

import math
import os
import statistics
from collections import deque
from collections.abc import Callable
from pathlib import Path

WAIT_POLICY_VARIABLE = "OMP_WAIT_POLICY"
_LOADAVG = Path("/proc/loadavg")
_OWN_TASKS = Path("/proc/self/task")
_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def wait_passively() -> None:
    """Threads waiting at a barrier sleep instead of spinning; effective only before torch loads OpenMP."""
    os.environ.setdefault(WAIT_POLICY_VARIABLE, "PASSIVE")


def usable_cores(cpu_max: Path = _CGROUP_CPU_MAX) -> int:
    """The cores this process may run on (its affinity), fewer where a cgroup's CPU quota allows fewer."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota to honour
    return cores


def threads_for(cores: int, others_runnable: float) -> int:
    """Threads that fit in the cores other processes leave free now; always at least one."""
    return max(1, min(cores, cores - round(others_runnable)))


def others_runnable(loadavg: Path = _LOADAVG, own_tasks: Path = _OWN_TASKS) -> int | None:
    """Tasks of other processes that are running or waiting for a CPU now; None where the kernel does not say.

    /proc/loadavg's fourth field counts every runnable task on the machine at this instant (the load
    average trails by a minute, and counts this process's own earlier work); this process's own running
    threads, at least the one reading, are taken off.
    """
    try:
        runnable = int(loadavg.read_text().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None
    own = 0
    for stat in own_tasks.glob("*/stat"):
        try:
            own += stat.read_text().rsplit(")", 1)[-1].split()[0] == "R"
        except (OSError, IndexError):
            continue  # a thread that ended while we looked
    return max(0, runnable - max(1, own))


class ThreadGovernor:
    """Keeps torch's intra-op threads at what the machine can give, from the median of the latest readings."""

    def __init__(
        self,
        set_threads: Callable[[int], None],
        cores: int | None = None,
        read_others: Callable[[], int | None] | None = None,
        window: int = 5,
    ) -> None:
        self._set_threads = set_threads
        self.cores = cores if cores is not None else usable_cores()
        self._read_others = read_others or (lambda: others_runnable())  # looked up at each call
        self._readings: deque[int] = deque(maxlen=window)
        self.threads = 0  # none set yet

    def adjust(self) -> int:
        """Read the machine once; set and return the thread count (unchanged where nothing can be read)."""
        others = self._read_others()
        if others is not None:
            self._readings.append(others)
        wanted = threads_for(self.cores, statistics.median(self._readings)) if self._readings else self.cores
        if wanted != self.threads:
            self._set_threads(wanted)
            self.threads = wanted
        return wanted
