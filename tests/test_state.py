"""The queue state as a fold of journal records."""

from __future__ import annotations

from typing import Any

import pytest

from inuqueue.state import QueueState, StateError


class Folder:
    """Feeds records with consecutive sequence numbers into a state."""

    def __init__(self) -> None:
        self.state = QueueState()
        self.seq = 0

    def apply(self, op: str, **fields: Any) -> None:
        self.seq += 1
        record = {"seq": self.seq, "ts": f"t{self.seq}", "op": op, **fields}
        self.state.apply(record)

    def enqueue(self, task_id: str, priority: int = 0) -> None:
        task = {
            "task_id": task_id,
            "type": "txt2img",
            "request": {},
            "priority": priority,
        }
        self.apply("enqueue", task=task)


def test_higher_priority_runs_first_then_arrival_order() -> None:
    fold = Folder()
    for task_id, priority in [("a", 0), ("b", 5), ("c", 0), ("d", 5)]:
        fold.enqueue(task_id, priority)

    state = fold.state
    assert [t.task_id for t in state.pending_page(0, 10)] == ["b", "d", "a", "c"]
    assert state.position(state.tasks["a"]) == 2
    assert state.pending_page(1, 2)[0].task_id == "d"


def test_a_retried_task_keeps_its_place_at_the_front() -> None:
    fold = Folder()
    fold.enqueue("a")
    fold.enqueue("b")
    fold.apply("start", task_id="a")
    fold.apply("retry", task_id="a", reason="reset")

    task = fold.state.tasks["a"]
    assert (task.status, task.attempts) == ("pending", 1)
    assert fold.state.next_pending() is task


def test_a_release_gives_the_attempt_back() -> None:
    fold = Folder()
    fold.enqueue("a")
    fold.apply("start", task_id="a")
    fold.apply("release", task_id="a", reason="webui down")

    assert fold.state.tasks["a"].attempts == 0


def test_finish_keeps_images_info_and_error() -> None:
    fold = Folder()
    fold.enqueue("a")
    fold.apply("start", task_id="a")
    image = {"digest": "d" * 64, "content_type": "image/png", "bytes": 3}
    fold.apply("finish", task_id="a", status="done", images=[image], info={"seed": 1})

    task = fold.state.tasks["a"]
    assert (task.status, task.images, task.info, task.finished_at) == (
        "done",
        [image],
        {"seed": 1},
        "t3",
    )
    assert not fold.state.pending and not fold.state.running


@pytest.mark.parametrize(
    ("op", "fields"),
    [
        ("finish", {"task_id": "a", "status": "done"}),
        ("retry", {"task_id": "a", "reason": "x"}),
        ("start", {"task_id": "nobody"}),
        ("teleport", {"task_id": "a"}),
    ],
)
def test_records_that_do_not_fit_the_state_are_refused(
    op: str, fields: dict[str, Any]
) -> None:
    fold = Folder()
    fold.enqueue("a")
    with pytest.raises(StateError):
        fold.apply(op, **fields)


def test_a_txt2img_body_with_stray_image_keys_points_at_no_image() -> None:
    # Found by schemathesis: a float where img2img would have a list of images.
    fold = Folder()
    task = {
        "task_id": "a",
        "type": "txt2img",
        "request": {"init_images": 1.5, "mask": {"digest": 7}},
    }
    fold.apply("enqueue", task=task)

    assert list(fold.state.tasks["a"].digests()) == []
    assert fold.state.image_refs == {}
