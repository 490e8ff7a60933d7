"""The queue state as a fold of journal records."""

from __future__ import annotations

from typing import Any

import pytest

from inuqueue.state import KEPT_ATTEMPTS, QueueState, StateError


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


def _hooked(fold: Folder, task_id: str) -> None:
    spec = {
        "task_id": task_id,
        "type": "txt2img",
        "request": {},
        "callback_url": "http://127.0.0.1:1/hook",
        "callback_format": "native",
    }
    fold.apply("enqueue", task=spec)


def test_a_final_status_makes_a_callback_owed_until_its_outcome() -> None:
    fold = Folder()
    _hooked(fold, "a")
    _hooked(fold, "b")
    fold.enqueue("c")
    fold.apply("cancel", task_id="b")
    fold.apply("start", task_id="a")
    fold.apply("finish", task_id="a", status="failed", error={"reason": "x"})
    fold.apply("cancel", task_id="c")

    assert list(fold.state.deliveries) == ["b", "a"]
    try_ = {"at": "t", "status_code": 500, "error": None, "retry_at": "t2"}
    fold.apply("deliver", task_id="a", attempt=try_, outcome=None)
    assert fold.state.tasks["a"].delivery == "pending"
    fold.apply(
        "deliver",
        task_id="a",
        attempt={**try_, "status_code": 200},
        outcome="delivered",
    )

    task = fold.state.tasks["a"]
    assert (task.delivery, task.delivery_tries) == ("delivered", 2)
    assert [a["status_code"] for a in task.delivery_attempts] == [500, 200]
    assert list(fold.state.deliveries) == ["b"]
    assert fold.state.tasks["c"].delivery is None
    with pytest.raises(StateError):
        fold.apply("deliver", task_id="a", attempt=try_, outcome="delivered")
    with pytest.raises(StateError):
        fold.apply("deliver", task_id="b", attempt=try_, outcome="lost")


def test_only_the_latest_attempts_are_kept_but_all_are_counted() -> None:
    fold = Folder()
    _hooked(fold, "a")
    fold.apply("cancel", task_id="a")
    for n in range(KEPT_ATTEMPTS + 5):
        fold.apply("deliver", task_id="a", attempt={"n": n}, outcome=None)

    task = fold.state.tasks["a"]
    assert task.delivery_tries == KEPT_ATTEMPTS + 5
    assert [a["n"] for a in task.delivery_attempts] == list(range(5, KEPT_ATTEMPTS + 5))


def test_a_snapshot_keeps_owed_callbacks_and_bookmarks() -> None:
    fold = Folder()
    _hooked(fold, "a")
    fold.apply("cancel", task_id="a")
    fold.apply("deliver", task_id="a", attempt={"n": 1}, outcome=None)
    fold.enqueue("b")
    fold.apply("update", task_id="b", bookmarked=True)

    rebuilt = Folder()
    for op, fields in fold.state.snapshot():
        rebuilt.apply(op, **fields)

    assert list(rebuilt.state.deliveries) == ["a"]
    assert rebuilt.state.tasks["a"].delivery_attempts == [{"n": 1}]
    assert rebuilt.state.tasks["b"].bookmarked
    assert rebuilt.state.tasks["b"].updated_at == fold.state.tasks["b"].updated_at


def test_an_edited_request_moves_the_image_references() -> None:
    fold = Folder()
    old, new = "a" * 64, "b" * 64
    spec = {
        "task_id": "a",
        "type": "img2img",
        "request": {"init_images": [{"digest": old}], "prompt": "x"},
    }
    fold.apply("enqueue", task=spec)
    request = {"init_images": [{"digest": new}], "prompt": "y"}
    fold.apply("update", task_id="a", request=request, checkpoint="m")

    task = fold.state.tasks["a"]
    assert (task.request, task.checkpoint, task.updated_at) == (request, "m", "t2")
    assert fold.state.image_refs == {new: 1}


def test_only_a_pending_task_takes_a_new_request() -> None:
    fold = Folder()
    fold.enqueue("a")
    fold.apply("cancel", task_id="a")
    fold.apply("update", task_id="a", name="kept", bookmarked=True)

    with pytest.raises(StateError):
        fold.apply("update", task_id="a", request={"prompt": "late"})
    assert fold.state.tasks["a"].name == "kept"
