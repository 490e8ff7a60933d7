"""The processing object of one txt2img/img2img job, set up as process_images does.

Set-up applies the job's settings overrides, resolves seeds and styled prompts, and
runs the hires-fix and img2img initialisation. A request that fails there in the
webui fails here at the same point and with the same exception class, because a
client sees both.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from inuqueue.standin.catalog import (
    CHECKPOINT_ALIASES,
    LATENT_UPSCALE_MODES,
    SAMPLERS_BY_NAME,
    SCHEDULERS_BY_KEY,
    TIMESTEP_SAMPLERS,
    UPSCALER_NAMES,
    Checkpoint,
    resolve_sampler,
)
from inuqueue.standin.options import OPTION_DEFAULTS, RESTRICTED_API_OPTIONS
from inuqueue.standin.state import Standin
from inuqueue.standin.styles import apply_styles
from inuqueue.standin.webhttp import WebuiFailure

# The latent space is 8 times smaller than the picture on each side.
LATENT_FACTOR = 8
# get_fixed_seed draws random seeds below this bound.
RANDOM_SEED_BOUND = 4_294_967_294


def fixed_seed(seed: int | None) -> int:
    """Resolve -1 or None to a random seed, like the webui's get_fixed_seed."""
    if seed is None or seed == -1:
        return random.randrange(RANDOM_SEED_BOUND)
    return seed


@dataclass
class Picture:
    """One output picture before encoding."""

    seed: int
    width: int
    height: int
    completion: float
    infotext: str


@dataclass
class Job:
    """The processing object: request values plus everything resolved for the job."""

    kind: str
    values: dict[str, Any]
    sampler: str
    scheduler: str | None
    options: dict[str, Any]
    checkpoint: Checkpoint
    init_count: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    all_prompts: list[str] = field(default_factory=list)
    all_negative: list[str] = field(default_factory=list)
    all_seeds: list[int] = field(default_factory=list)
    all_subseeds: list[int] = field(default_factory=list)
    hr_prompts: list[str] = field(default_factory=list)
    hr_negative: list[str] = field(default_factory=list)
    hires_size: tuple[int, int] | None = None
    schedule_label: str = "Automatic"
    failure_checked: bool = False

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


def _apply_overrides(standin: Standin, job_values: dict[str, Any]) -> dict[str, Any]:
    """The settings for this job: override_settings applied over the live options."""
    overrides: dict[str, Any] = dict(job_values.get("override_settings") or {})
    wanted_model = overrides.get("sd_model_checkpoint")
    # An unknown model is dropped quietly; the job runs on the current one.
    if not isinstance(wanted_model, str) or wanted_model not in CHECKPOINT_ALIASES:
        overrides.pop("sd_model_checkpoint", None)
    job_options = dict(standin.options)
    for key, value in overrides.items():
        if job_options.get(key) == value:
            continue
        if key not in OPTION_DEFAULTS:
            raise KeyError(key)  # what opts.set does for a setting it does not know
        if key in RESTRICTED_API_OPTIONS:
            continue
        job_options[key] = value
    if "sd_model_checkpoint" in overrides:
        model = CHECKPOINT_ALIASES[overrides["sd_model_checkpoint"]]
        job_options["sd_model_checkpoint"] = model.title
    if not job_values.get("override_settings_restore_afterwards", True):
        standin.options.update(job_options)
    return job_options


def prepare_job(
    standin: Standin, kind: str, values: dict[str, Any], init_count: int
) -> Job:
    """Everything process_images does before its first batch (no awaiting inside)."""
    options = _apply_overrides(standin, values)
    checkpoint = CHECKPOINT_ALIASES[options["sd_model_checkpoint"]]
    sampler, scheduler_label = resolve_sampler(
        values["sampler_name"] or values["sampler_index"], values["scheduler"]
    )
    scheduler = values["scheduler"] or (
        None if scheduler_label == "Automatic" else scheduler_label
    )
    job = Job(kind, dict(values), sampler, scheduler, options, checkpoint, init_count)
    # process_images re-resolves the pair without converting back to Automatic.
    job.schedule_label = resolve_sampler(sampler, scheduler, convert_automatic=False)[1]
    if job["prompt"] is None:  # the webui asserts it: a 500 AssertionError, no message
        raise WebuiFailure("AssertionError", "")

    seed, subseed = fixed_seed(job["seed"]), fixed_seed(job["subseed"])
    for name, option in (("restore_faces", "face_restoration"), ("tiling", "tiling")):
        if job.values[name] is None:
            job.values[name] = options[option]
    refiner = job["refiner_checkpoint"]
    if (
        refiner not in (None, "", "None", "none")
        and _closest_checkpoint(refiner) is None
    ):
        raise WebuiFailure(
            "Exception", f"Could not find checkpoint with name {refiner}"
        )

    styles = job["styles"] or []
    total = job["batch_size"] * job["n_iter"]
    prompt = apply_styles(job["prompt"], styles, negative=False)
    negative = apply_styles(job["negative_prompt"] or "", styles, negative=True)
    job.all_prompts, job.all_negative = total * [prompt], total * [negative]
    offset_each = job["subseed_strength"] == 0
    job.all_seeds = [seed + (x if offset_each else 0) for x in range(total)]
    job.all_subseeds = [subseed + x for x in range(total)]
    if kind == "txt2img" and job["enable_hr"]:
        _init_hires(standin, job, styles)
    if kind == "img2img":
        _init_img2img(job)
    if standin.state.job_count == -1:
        standin.state.job_count = job["n_iter"]
    _record_schedule(job)
    return job


def _record_schedule(job: Job) -> None:
    """The schedule the sampler really uses, which the infotext then reports."""
    if job.sampler in TIMESTEP_SAMPLERS:
        return
    label = job.schedule_label
    if label == "Automatic":
        default = dict(SAMPLERS_BY_NAME[job.sampler].options).get("scheduler")
        if not isinstance(default, str):
            return
        label = SCHEDULERS_BY_KEY[default].label
    job.extra["Schedule type"] = label


def _closest_checkpoint(name: str) -> Checkpoint | None:
    """An alias, else the shortest title that contains the name, as upstream."""
    found = CHECKPOINT_ALIASES.get(name)
    if found is not None:
        return found
    matches = [c for c in set(CHECKPOINT_ALIASES.values()) if name in c.title]
    return min(matches, key=lambda c: len(c.title), default=None)


def _init_hires(standin: Standin, job: Job, styles: list[str]) -> None:
    """The txt2img hires-fix set-up: target size, job count doubled, infotext keys."""
    job.extra["Denoising strength"] = job["denoising_strength"]
    name = job["hr_checkpoint_name"]
    if name and name != "Use same checkpoint":
        found = _closest_checkpoint(name)
        if found is None:
            raise WebuiFailure(
                "Exception", f"Could not find checkpoint with name {name}"
            )
        job.extra["Hires checkpoint"] = f"{found.filename_stem} [{found.shorthash}]"
    if job["hr_sampler_name"] is not None and job["hr_sampler_name"] != job.sampler:
        job.extra["Hires sampler"] = job["hr_sampler_name"]
    hr_prompt = job["hr_prompt"] if job["hr_prompt"] != "" else job["prompt"]
    job.hr_prompts = len(job.all_prompts) * [
        apply_styles(hr_prompt, styles, negative=False)
    ]
    hr_negative = job["hr_negative_prompt"] or job["negative_prompt"] or ""
    job.hr_negative = len(job.all_prompts) * [
        apply_styles(hr_negative, styles, negative=True)
    ]
    # Computed per picture upstream (callables, so null in info); None means "same".
    job.extra["Hires prompt"] = None
    job.extra["Hires negative prompt"] = None
    job.extra["Hires schedule type"] = None
    upscaler = job["hr_upscaler"]
    if (
        upscaler is not None
        and upscaler not in LATENT_UPSCALE_MODES
        and upscaler not in UPSCALER_NAMES
    ):
        raise WebuiFailure("Exception", f"could not find upscaler named {upscaler}")
    job.hires_size = _hires_target(job)
    state = standin.state
    if not state.processing_has_refined_job_count:
        if state.job_count == -1:
            state.job_count = job["n_iter"]
        state.job_count *= 2
        state.processing_has_refined_job_count = True
    if job["hr_second_pass_steps"]:
        job.extra["Hires steps"] = job["hr_second_pass_steps"]
    if upscaler is not None:
        job.extra["Hires upscaler"] = upscaler


def _hires_target(job: Job) -> tuple[int, int]:
    """The hires picture size: scaled, or fitted to hr_resize_x/y and cropped."""
    width, height = job["width"], job["height"]
    resize_x, resize_y = job["hr_resize_x"], job["hr_resize_y"]
    if resize_x == 0 and resize_y == 0:
        job.extra["Hires upscale"] = job["hr_scale"]
        target = int(width * job["hr_scale"]), int(height * job["hr_scale"])
        return latent_size(*target)
    job.extra["Hires resize"] = f"{resize_x}x{resize_y}"
    if resize_y == 0:
        return latent_size(resize_x, resize_x * height // width)
    if resize_x == 0:
        return latent_size(resize_y * width // height, resize_y)
    if width / height < resize_x / resize_y:
        upscaled = resize_x, resize_x * height // width
    else:
        upscaled = resize_y * width // height, resize_y
    crop_x = (upscaled[0] - resize_x) // LATENT_FACTOR
    crop_y = (upscaled[1] - resize_y) // LATENT_FACTOR
    latent_x = upscaled[0] // LATENT_FACTOR - crop_x
    latent_y = upscaled[1] // LATENT_FACTOR - crop_y
    return latent_x * LATENT_FACTOR, latent_y * LATENT_FACTOR


def latent_size(width: int, height: int) -> tuple[int, int]:
    """A picture size as the latent space allows it: floored to multiples of 8."""
    return (
        width // LATENT_FACTOR * LATENT_FACTOR,
        height // LATENT_FACTOR * LATENT_FACTOR,
    )


def _init_img2img(job: Job) -> None:
    """The img2img set-up: init image count against batch size, infotext keys."""
    job.extra["Denoising strength"] = job["denoising_strength"]
    if job["mask"]:
        if job["inpainting_mask_invert"]:
            job.extra["Mask mode"] = "Inpaint not masked"
        if job["mask_blur_x"] > 0 or job["mask_blur_y"] > 0:
            same = job["mask_blur_x"] == job["mask_blur_y"]
            job.extra["Mask blur"] = job["mask_blur_x"] if same else None
        if job["inpaint_full_res"]:
            job.extra["Inpaint area"] = "Only masked"
            job.extra["Masked area padding"] = job["inpaint_full_res_padding"]
        fills = {0: "fill", 2: "latent noise", 3: "latent nothing"}
        if job["inpainting_fill"] in fills:
            job.extra["Masked content"] = fills[job["inpainting_fill"]]
    if job.init_count == 0:
        raise WebuiFailure("RuntimeError", "stack expects a non-empty TensorList")
    if job.init_count > 1:
        if job.init_count > job["batch_size"]:
            raise WebuiFailure(
                "RuntimeError",
                f"bad number of images passed: {job.init_count}; "
                f"expecting {job['batch_size']} or less",
            )
        job.values["batch_size"] = job.init_count
    multiplier = job["initial_noise_multiplier"]
    if multiplier is None:
        multiplier = job.options["initial_noise_multiplier"]
    if multiplier != 1.0:
        job.extra["Noise multiplier"] = multiplier


def first_pass_steps(job: Job) -> int:
    """Sampling steps of a batch's first pass (img2img runs a share of them)."""
    steps: int = job["steps"]
    if job.kind == "txt2img":
        return steps
    if job.options["img2img_fix_steps"]:
        return steps
    return int(min(job["denoising_strength"], 0.999) * steps) + 1


def hires_pass_steps(job: Job) -> int:
    """Sampling steps of the hires pass: all of them, once the strength checks out."""
    requested: int = job["hr_second_pass_steps"] or job["steps"]
    # The webui derives a schedule length from the strength first; None fails there.
    _ = (
        int(requested / min(job["denoising_strength"], 0.999))
        if job["denoising_strength"] > 0
        else 0
    )
    return requested
