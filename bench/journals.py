"""Big journals, written record by record with `inuqueue.journal.encode_record`.

The records have the shapes `inuqueue.state` applies (see its docstring); the
request and the info of a finished task are as big as a real webui's: a txt2img body
of about 20 fields, and the info the webui sends for one image.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from inuqueue.journal import JOURNAL_NAME, encode_record

Record = dict[str, Any]

# What a client queues: the txt2img body of a typical script or UI, after inuqueue
# took its own fields (name, priority) out.
REQUEST: dict[str, Any] = {
    "prompt": "a lighthouse on a cliff at dusk, oil painting, dramatic light, "
    "seagulls, crashing waves, highly detailed",
    "negative_prompt": "blurry, lowres, text, watermark, jpeg artifacts",
    "styles": [],
    "seed": -1,
    "subseed": -1,
    "subseed_strength": 0.0,
    "steps": 25,
    "cfg_scale": 7.0,
    "width": 512,
    "height": 768,
    "batch_size": 1,
    "n_iter": 1,
    "sampler_name": "DPM++ 2M",
    "scheduler": "karras",
    "restore_faces": False,
    "tiling": False,
    "enable_hr": False,
    "denoising_strength": 0.7,
    "override_settings": {"sd_model_checkpoint": "v1-5-pruned-emaonly.safetensors"},
    "save_images": False,
}

# The HTTP body of an enqueue: the same request plus inuqueue's own fields.
ENQUEUE_BODY: dict[str, Any] = {
    **{k: v for k, v in REQUEST.items() if k != "override_settings"},
    "name": "lighthouse",
    "priority": 0,
    "checkpoint": "v1-5-pruned-emaonly.safetensors",
}

_INFOTEXT = (
    "a lighthouse on a cliff at dusk, oil painting, dramatic light, seagulls, "
    "crashing waves, highly detailed\nNegative prompt: blurry, lowres, text, "
    "watermark, jpeg artifacts\nSteps: 25, Sampler: DPM++ 2M, Schedule type: Karras, "
    "CFG scale: 7.0, Seed: {seed}, Size: 512x768, Model hash: 6ce0161689, Model: "
    "v1-5-pruned-emaonly, Version: v1.10.1"
)


def _info(seed: int) -> dict[str, Any]:
    """The parsed info of a one-image generation, keyed as the webui keys it."""
    infotext = _INFOTEXT.format(seed=seed)
    return {
        "prompt": REQUEST["prompt"],
        "all_prompts": [REQUEST["prompt"]],
        "negative_prompt": REQUEST["negative_prompt"],
        "all_negative_prompts": [REQUEST["negative_prompt"]],
        "seed": seed,
        "all_seeds": [seed],
        "subseed": seed + 1,
        "all_subseeds": [seed + 1],
        "subseed_strength": 0,
        "width": 512,
        "height": 768,
        "sampler_name": "DPM++ 2M",
        "cfg_scale": 7.0,
        "steps": 25,
        "batch_size": 1,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": "v1-5-pruned-emaonly",
        "sd_model_hash": "6ce0161689",
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": 0.7,
        "extra_generation_params": {"Schedule type": "Karras"},
        "index_of_first_image": 0,
        "infotexts": [infotext],
        "styles": [],
        "job_timestamp": "20261204120000",
        "clip_skip": 1,
        "is_using_inpainting_conditioning": False,
        "version": "v1.10.1",
    }


class JournalWriter:
    """Gives records their seq and a rising timestamp and writes them as lines."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / JOURNAL_NAME
        self._file = self.path.open("wb")
        self.seq = 0
        self._clock = datetime(2026, 12, 4, 12, 0, 0, tzinfo=timezone.utc)
        self._second = ""
        self._second_of = -1
        self._ms = 0

    def _ts(self) -> str:
        # One millisecond per record; the date part is formatted once a second.
        self._ms += 1
        second, millis = divmod(self._ms, 1000)
        if second != self._second_of:
            self._second_of = second
            moment = self._clock + timedelta(seconds=second)
            self._second = moment.strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._second}.{millis:03d}Z"

    def add(self, op: str, **fields: Any) -> None:
        """Write one record."""
        self.seq += 1
        record: Record = {"seq": self.seq, "ts": self._ts(), "op": op, **fields}
        self._file.write(encode_record(record))

    def close(self) -> None:
        """Flush and close the file."""
        self._file.close()


def _task_ids(count: int, seed: int) -> Iterator[str]:
    rng = random.Random(seed)
    for _ in range(count):
        yield str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _enqueue(journal: JournalWriter, task_id: str, index: int) -> None:
    spec = {
        "task_id": task_id,
        "type": "txt2img",
        "name": f"lighthouse {index}",
        "priority": index % 3,
        "request": REQUEST,
        "idempotency_key": None,
    }
    journal.add("enqueue", task=spec)


def _finish(journal: JournalWriter, task_id: str, index: int) -> None:
    seed = 1_000_000 + index
    digest = hashlib.sha256(b"image %d" % index).hexdigest()
    info = _info(seed)
    image = {
        "digest": digest,
        "content_type": "image/png",
        "bytes": 412_345 + index % 1000,
        "infotext": info["infotexts"][0],
        "seed": seed,
    }
    journal.add(
        "finish", task_id=task_id, status="done", images=[image], info=info, error=None
    )


def write_pending(data_dir: Path, tasks: int, *, paused: bool = True) -> int:
    """A journal of `tasks` pending tasks (pause first: nothing starts them)."""
    journal = JournalWriter(data_dir)
    if paused:
        journal.add("pause")
    for index, task_id in enumerate(_task_ids(tasks, seed=1)):
        _enqueue(journal, task_id, index)
    journal.close()
    return journal.seq


def write_small(data_dir: Path, pending: int, finished: int) -> int:
    """A paused journal with `finished` done tasks and `pending` waiting ones."""
    journal = JournalWriter(data_dir)
    journal.add("pause")
    ids = list(_task_ids(pending + finished, seed=2))
    for index, task_id in enumerate(ids[:finished]):
        _enqueue(journal, task_id, index)
        journal.add("start", task_id=task_id)
        _finish(journal, task_id, index)
    for index, task_id in enumerate(ids[finished:], start=finished):
        _enqueue(journal, task_id, index)
    journal.close()
    return journal.seq


def write_history(data_dir: Path, tasks: int) -> int:
    """Ten records per task, every task done: a long-lived daemon's journal.

    Each task is queued, renamed, twice released (the webui was down when it was
    sent), once broken off and retried, and then done: enqueue, update, start,
    release, start, release, start, retry, start, finish.
    """
    journal = JournalWriter(data_dir)
    for index, task_id in enumerate(_task_ids(tasks, seed=3)):
        _enqueue(journal, task_id, index)
        journal.add("update", task_id=task_id, name=f"lighthouse {index} (kept)")
        for _ in range(2):
            journal.add("start", task_id=task_id)
            journal.add("release", task_id=task_id, reason="the webui is unreachable")
        journal.add("start", task_id=task_id)
        journal.add(
            "retry",
            task_id=task_id,
            reason="ServerDisconnectedError: Server disconnected",
        )
        journal.add("start", task_id=task_id)
        _finish(journal, task_id, index)
    journal.close()
    return journal.seq
