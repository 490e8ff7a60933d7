"""Start-up replay, timed in a fresh process.

    python -m bench.replay_child replay DATA_DIR     TaskQueue(...) as the daemon
    python -m bench.replay_child orjson DATA_DIR     orjson.loads of every line

`replay` builds the daemon's `TaskQueue` on the journal, which reads, checks and
applies every record (its constructor is the replay); `orjson` parses the same
lines and keeps nothing.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import orjson

from bench.common import child_report
from inuqueue.journal import JOURNAL_NAME
from inuqueue.log import configure_logging
from inuqueue.queue import TaskQueue


def main() -> None:
    """Time one replay or one plain parse and report it."""
    mode, data_dir = sys.argv[1], Path(sys.argv[2])
    # The replay logs a line; it goes to stderr, the report to stdout.
    configure_logging(json=True)
    started = time.perf_counter()
    cpu_started = time.process_time()
    if mode == "replay":
        queue = TaskQueue(data_dir, max_attempts=3, fsync=True)
        records, tasks = queue.journal.records, len(queue.state.tasks)
    else:
        records = 0
        with (data_dir / JOURNAL_NAME).open("rb") as f:
            for line in f:
                orjson.loads(line)
                records += 1
        tasks = 0
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    vm_hwm = 0
    for entry in Path("/proc/self/status").read_text().splitlines():
        if entry.startswith("VmHWM:"):
            vm_hwm = int(entry.split()[1]) * 1024
    child_report(
        {
            "mode": mode,
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "records": records,
            "tasks": tasks,
            "peak_rss": vm_hwm,
        }
    )


if __name__ == "__main__":
    main()
