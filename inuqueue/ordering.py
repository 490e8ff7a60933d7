"""Where a moved task goes: the priority and rank that put it there."""

from __future__ import annotations

from typing import Any

from inuqueue.state import QueueState, Task


def plan_move(
    state: QueueState, task: Task, *, to: str | None, other: Task | None, after: bool
) -> dict[str, Any] | None:
    """The priority and rank that put `task` where it is asked to go.

    A task that moves takes the priority of its new neighbours, so that it stays
    where it was put. None when there is nowhere else to go.
    """
    keys = [key for key in state.pending if key[2] != task.task_id]
    if not keys or (other is not None and other.task_id == task.task_id):
        return None

    if to == "top":
        index = 0
    elif to == "bottom":
        index = len(keys)
    else:
        assert other is not None
        index = keys.index(other.pending_key) + (1 if after else 0)

    anchor = keys[min(index, len(keys) - 1)]
    priority = -anchor[0]
    before = keys[index - 1] if index > 0 and -keys[index - 1][0] == priority else None
    behind = keys[index] if index < len(keys) and -keys[index][0] == priority else None
    if before is None and behind is None:
        return {"priority": priority, "rank": anchor[1]}
    if before is None:
        assert behind is not None
        return {"priority": priority, "rank": behind[1] - 1}
    if behind is None:
        return {"priority": priority, "rank": before[1] + 1}

    rank = (before[1] + behind[1]) / 2
    if before[1] < rank < behind[1]:
        return {"priority": priority, "rank": rank}
    # Halving ran out of float precision here: number the whole priority anew.
    same = [key for key in keys if -key[0] == priority]
    place = same.index(behind)
    ranks = {key[2]: float(n + (1 if n >= place else 0)) for n, key in enumerate(same)}
    return {"priority": priority, "rank": float(place), "ranks": ranks}
