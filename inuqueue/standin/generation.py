"""Running a prepared job: batches of simulated sampling steps, then its pictures.

Each of ``n_iter`` batches samples step by step (with an optional hires pass),
checking for interrupt and skip before every step as the webui's denoiser does,
and pausing where a test holds it.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from inuqueue.standin.catalog import SAMPLERS_BY_NAME, VERSION
from inuqueue.standin.infotext import format_infotext
from inuqueue.standin.job import (
    Job,
    Picture,
    first_pass_steps,
    hires_pass_steps,
    latent_size,
)
from inuqueue.standin.progress import Latent
from inuqueue.standin.state import Standin
from inuqueue.standin.webhttp import WebuiFailure


def infotext_for(job: Job, index: int, *, main: bool = False) -> str:
    """The infotext of picture ``index`` (or of the grid, with ``main``)."""
    index = 0 if main else index
    opts = job.options
    strength = job["subseed_strength"]
    resize_w, resize_h = job["seed_resize_from_w"], job["seed_resize_from_h"]
    clip_skip: int = opts["CLIP_stop_at_last_layers"]
    sampler_options = dict(SAMPLERS_BY_NAME[job.sampler].options)
    uses_ensd = opts["eta_noise_seed_delta"] != 0 and sampler_options.get("uses_ensd")
    restorer = opts["face_restoration_model"] if job["restore_faces"] else None
    model_hash = job.checkpoint.shorthash if opts["add_model_hash_to_info"] else None
    model = job.checkpoint.filename_stem if opts["add_model_name_to_info"] else None
    resized = None if resize_w <= 0 or resize_h <= 0 else f"{resize_w}x{resize_h}"
    extra = dict(job.extra)
    if job.hr_prompts and job.hr_prompts[index] != job.all_prompts[index]:
        extra["Hires prompt"] = job.hr_prompts[index]
    if job.hr_negative and job.hr_negative[index] != job.all_negative[index]:
        extra["Hires negative prompt"] = job.hr_negative[index]
    # Key order is the webui's; None values are left out of the text.
    params: dict[str, object] = {
        "Steps": job["steps"],
        "Sampler": job.sampler,
        "Schedule type": job.schedule_label,
        "CFG scale": job["cfg_scale"],
        "Image CFG scale": None,
        "Seed": job.all_seeds[index],
        "Face restoration": restorer,
        "Size": f"{job['width']}x{job['height']}",
        "Model hash": model_hash,
        "Model": model,
        "Variation seed": None if strength == 0 else job.all_subseeds[index],
        "Variation seed strength": None if strength == 0 else strength,
        "Seed resize from": resized,
        "Denoising strength": extra.get("Denoising strength"),
        "Clip skip": None if clip_skip <= 1 else clip_skip,
        "ENSD": opts["eta_noise_seed_delta"] if uses_ensd else None,
        "RNG": opts["randn_source"] if opts["randn_source"] != "GPU" else None,
        "Tiling": "True" if job["tiling"] else None,
        **extra,  # a repeated key keeps its place above and takes this value
        "Version": VERSION if opts["add_version_to_infotext"] else None,
    }
    return format_infotext(job.all_prompts[index], job.all_negative[index], params)


def _check_injected_failure(standin: Standin, job: Job) -> None:
    """Fail the job here if a test asked for it (once per job, at its first step)."""
    if job.failure_checked:
        return
    job.failure_checked = True
    status = standin.take_failure()
    if status is not None:
        raise WebuiFailure(
            "RuntimeError", "injected failure (stand-in fail_next)", status
        )


async def _sample(
    standin: Standin, job: Job, steps: int, seed: int, size: tuple[int, int]
) -> float:
    """Run one pass step by step; return how much of it was done (1.0 = all)."""
    state = standin.state
    state.sampling_steps = steps
    state.sampling_step = 0
    step_s = standin.config.step_ms / 1000
    for step in range(steps):
        await standin.pause_point(state.job_no, step)
        _check_injected_failure(standin, job)
        if state.interrupted or state.skipped:
            return step / steps
        if step_s > 0:
            await asyncio.sleep(step_s)
        state.sampling_step = step
        state.latent = Latent(seed, size[0], size[1], (step + 1) / steps)
    return 1.0


@dataclass
class Processed:
    """What a job made: its pictures, and the grid put before them, if any."""

    pictures: list[Picture]
    grid_infotext: str | None = None
    grid_columns: int = 1

    @property
    def index_of_first_image(self) -> int:
        """1 when a grid comes first."""
        return 0 if self.grid_infotext is None else 1

    @property
    def infotexts(self) -> list[str]:
        """One infotext per returned image, the grid's first."""
        grid = [] if self.grid_infotext is None else [self.grid_infotext]
        return grid + [picture.infotext for picture in self.pictures]


async def run_job(standin: Standin, job: Job) -> Processed:
    """The batches of a begun job, each stopping early on interrupt or skip."""
    state = standin.state
    base_size = latent_size(job["width"], job["height"])
    pictures: list[Picture] = []
    for batch in range(job["n_iter"]):
        if state.skipped:
            state.skipped = False
        if state.interrupted or state.stopping_generation:
            break
        batch_size = job["batch_size"]
        seeds = job.all_seeds[batch * batch_size : (batch + 1) * batch_size]
        if not seeds:
            break
        if base_size[0] <= 0 or base_size[1] <= 0:
            size_text = f"{job['width']}x{job['height']}"
            raise WebuiFailure("RuntimeError", f"cannot sample a {size_text} picture")
        if job["n_iter"] > 1:
            state.job = f"Batch {batch + 1} out of {job['n_iter']}"
        size = base_size
        completion = await _sample(standin, job, first_pass_steps(job), seeds[0], size)
        # An interrupt skips the hires pass: the first-pass picture comes back.
        if job.hires_size is not None and not state.interrupted:
            steps = hires_pass_steps(job)
            state.nextjob()
            size = job.hires_size
            completion = await _sample(standin, job, steps, seeds[0], size)
        state.nextjob()
        first = batch * batch_size
        pictures += [
            Picture(seed, size[0], size[1], completion, infotext_for(job, first + i))
            for i, seed in enumerate(seeds)
        ]
    _check_injected_failure(standin, job)  # a job without steps fails at its end
    return _with_grid(job, pictures)


def _with_grid(job: Job, pictures: list[Picture]) -> Processed:
    """Add a grid when the request saves images and made two or more."""
    opts = job.options
    unwanted = len(pictures) < 2 and opts["grid_only_if_multiple"]
    if not opts["return_grid"] or not job["save_images"] or unwanted or not pictures:
        return Processed(pictures)
    columns = grid_columns(job, len(pictures))
    return Processed(pictures, infotext_for(job, 0, main=True), columns)


def grid_columns(job: Job, count: int) -> int:
    """The webui's image_grid layout: about square unless n_rows says otherwise."""
    n_rows: int = job.options["n_rows"]
    rows: int
    if n_rows > 0:
        rows = n_rows
    elif n_rows == 0:
        rows = job["batch_size"]
    else:
        rows = min(round(math.sqrt(count)), count)
    return math.ceil(count / max(rows, 1))
