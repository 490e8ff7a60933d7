"""The webui's job state (shared.state) and task ids, as its progress routes show."""

from __future__ import annotations

import base64
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from inuqueue.standin.images import make_png

# How many finished task ids /internal/progress remembers as "completed".
FINISHED_TASKS_KEPT = 16
# Live previews are a reduced decode of the latent: 1/8 of the picture's sides.
PREVIEW_SCALE = 8


@dataclass(frozen=True)
class Latent:
    """What a live preview would be decoded from: the picture so far."""

    seed: int
    width: int
    height: int
    completion: float

    def preview_png(self) -> bytes:
        """A small PNG of the partly denoised picture."""
        width = max(1, self.width // PREVIEW_SCALE)
        height = max(1, self.height // PREVIEW_SCALE)
        return make_png(self.seed, width, height, completion=self.completion)


class ProgressState:
    """The webui's shared.state: what the running job is doing, step by step."""

    def __init__(self) -> None:
        self.skipped = False
        self.interrupted = False
        self.stopping_generation = False
        self.job = ""
        self.job_count = 0
        self.job_timestamp = "0"
        self.job_no = 0
        self.sampling_step = 0
        self.sampling_steps = 0
        self.time_start = 0.0
        self.textinfo: str | None = None
        self.processing_has_refined_job_count = False
        self.latent: Latent | None = None
        self.current_image: bytes | None = None
        self.current_image_sampling_step = 0
        self.id_live_preview = 0

    def begin(self, job: str) -> None:
        """Start a job: this is also where a stale interrupt or skip is forgotten."""
        self.sampling_step = 0
        self.time_start = time.time()
        self.job_count = -1
        self.processing_has_refined_job_count = False
        self.job_no = 0
        self.job_timestamp = datetime.now().strftime("%Y%m%d%H%M%S")
        self.latent = None
        self.current_image = None
        self.current_image_sampling_step = 0
        self.id_live_preview = 0
        self.skipped = False
        self.interrupted = False
        self.stopping_generation = False
        self.textinfo = None
        self.job = job

    def end(self) -> None:
        """Finish a job; the step counters keep their last values, as upstream."""
        self.job = ""
        self.job_count = 0

    def nextjob(self) -> None:
        """Move on to the next batch (or to the hires pass of this one)."""
        self.job_no += 1
        self.sampling_step = 0
        self.current_image_sampling_step = 0

    def interrupt(self) -> None:
        """Stop the running job at its next step (lost if nothing runs)."""
        self.interrupted = True

    def skip(self) -> None:
        """End the running batch at its next step."""
        self.skipped = True

    def set_current_image(self, options: dict[str, Any]) -> None:
        """Decode a new live preview if enough steps passed since the last one."""
        every_n_steps = options.get("show_progress_every_n_steps", 10)
        if not options.get("live_previews_enable") or every_n_steps == -1:
            return
        if self.sampling_step - self.current_image_sampling_step < every_n_steps:
            return
        if self.latent is None:
            return
        self.current_image = self.latent.preview_png()
        self.current_image_sampling_step = self.sampling_step
        self.id_live_preview += 1

    def as_dict(self) -> dict[str, Any]:
        """The ``state`` object of GET /sdapi/v1/progress."""
        return {
            "skipped": self.skipped,
            "interrupted": self.interrupted,
            "stopping_generation": self.stopping_generation,
            "job": self.job,
            "job_count": self.job_count,
            "job_timestamp": self.job_timestamp,
            "job_no": self.job_no,
            "sampling_step": self.sampling_step,
            "sampling_steps": self.sampling_steps,
        }

    def progress_response(
        self, options: dict[str, Any], *, skip_current_image: bool
    ) -> dict[str, Any]:
        """GET /sdapi/v1/progress, computed exactly as the webui computes it."""
        if self.job_count == 0:
            return {
                "progress": 0.0,
                "eta_relative": 0.0,
                "state": self.as_dict(),
                "current_image": None,
                "textinfo": self.textinfo,
            }
        progress = 0.01  # keeps the eta division away from zero
        if self.job_count > 0:
            progress += self.job_no / self.job_count
        if self.sampling_steps > 0:
            progress += 1 / self.job_count * self.sampling_step / self.sampling_steps
        elapsed_s = time.time() - self.time_start
        eta_relative = elapsed_s / progress - elapsed_s
        self.set_current_image(options)
        current_image = None
        if self.current_image is not None and not skip_current_image:
            current_image = base64.b64encode(self.current_image).decode("ascii")
        return {
            "progress": float(min(progress, 1)),  # the response model types it float
            "eta_relative": eta_relative,
            "state": self.as_dict(),
            "current_image": current_image,
            "textinfo": self.textinfo,
        }


class TaskRegistry:
    """The task ids behind /internal/progress and /internal/pending-tasks."""

    def __init__(self) -> None:
        self.pending: dict[str, float] = {}
        self.current: str | None = None
        self.finished: deque[str] = deque(maxlen=FINISHED_TASKS_KEPT)

    def add(self, task_id: str) -> None:
        """A request was accepted and waits for the queue lock."""
        self.pending[task_id] = time.time()

    def start(self, task_id: str) -> None:
        """The request holds the lock and its job has begun."""
        self.current = task_id
        self.pending.pop(task_id, None)

    def finish(self, task_id: str) -> None:
        """The job succeeded (a failed one is never finished, as in the webui)."""
        if self.current == task_id:
            self.current = None
        self.finished.append(task_id)

    def pending_response(self) -> dict[str, Any]:
        """GET /internal/pending-tasks."""
        return {"size": len(self.pending), "tasks": list(self.pending)}

    def progress_response(
        self,
        request: dict[str, Any],
        state: ProgressState,
        options: dict[str, Any],
    ) -> dict[str, Any]:
        """POST /internal/progress for one task id (no 0.01 offset here)."""
        task_id = request["id_task"]
        active = task_id == self.current
        queued = task_id in self.pending
        completed = task_id in self.finished
        response: dict[str, Any] = {
            "active": active,
            "queued": queued,
            "completed": completed,
            "progress": None,
            "eta": None,
            "live_preview": None,
            "id_live_preview": -1,
            "textinfo": "Waiting...",
        }
        if not active:
            if queued:
                order = sorted(self.pending, key=self.pending.__getitem__)
                response["textinfo"] = (
                    f"In queue: {order.index(task_id) + 1}/{len(order)}"
                )
            return response
        progress = 0.0
        if state.job_count > 0:
            progress += state.job_no / state.job_count
            if state.sampling_steps > 0:
                progress += (
                    1 / state.job_count * state.sampling_step / state.sampling_steps
                )
        progress = float(min(progress, 1))
        elapsed_s = time.time() - state.time_start
        predicted_s = elapsed_s / progress if progress > 0 else None
        response["progress"] = progress
        response["eta"] = None if predicted_s is None else predicted_s - elapsed_s
        response["id_live_preview"] = request["id_live_preview"]
        response["textinfo"] = state.textinfo
        if options.get("live_previews_enable") and request["live_preview"]:
            state.set_current_image(options)
            if (
                state.id_live_preview != request["id_live_preview"]
                and state.current_image
            ):
                encoded = base64.b64encode(state.current_image).decode("ascii")
                response["live_preview"] = f"data:image/png;base64,{encoded}"
                response["id_live_preview"] = state.id_live_preview
        return response
