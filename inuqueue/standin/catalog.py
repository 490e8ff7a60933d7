"""What the stand-in webui has installed: samplers, checkpoints, upscalers, scripts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# A stock install's folder layout; only ever shown in listings, never opened.
WEBUI_ROOT = "/home/user/stable-diffusion-webui"
VERSION = "v1.10.1"


@dataclass(frozen=True)
class Sampler:
    """A sampler as listed by /sdapi/v1/samplers."""

    name: str
    aliases: tuple[str, ...]
    options: tuple[tuple[str, object], ...] = ()

    def as_json(self) -> dict[str, Any]:
        """Options become strings, as the dict[str, str] response model makes them."""
        return {
            "name": self.name,
            "aliases": list(self.aliases),
            "options": {key: str(value) for key, value in self.options},
        }


SAMPLERS: tuple[Sampler, ...] = (
    Sampler("DPM++ 2M", ("k_dpmpp_2m",), (("scheduler", "karras"),)),
    Sampler(
        "DPM++ SDE",
        ("k_dpmpp_sde",),
        (("second_order", True), ("brownian_noise", True), ("scheduler", "karras")),
    ),
    Sampler(
        "DPM++ 2M SDE",
        ("k_dpmpp_2m_sde",),
        (("brownian_noise", True), ("scheduler", "exponential")),
    ),
    Sampler(
        "DPM++ 2M SDE Heun",
        ("k_dpmpp_2m_sde_heun",),
        (
            ("brownian_noise", True),
            ("solver_type", "heun"),
            ("scheduler", "exponential"),
        ),
    ),
    Sampler(
        "DPM++ 2S a",
        ("k_dpmpp_2s_a",),
        (("uses_ensd", True), ("second_order", True), ("scheduler", "karras")),
    ),
    Sampler(
        "DPM++ 3M SDE",
        ("k_dpmpp_3m_sde",),
        (
            ("brownian_noise", True),
            ("discard_next_to_last_sigma", True),
            ("scheduler", "exponential"),
        ),
    ),
    Sampler("Euler a", ("k_euler_a", "k_euler_ancestral"), (("uses_ensd", True),)),
    Sampler("Euler", ("k_euler",)),
    Sampler("LMS", ("k_lms",)),
    Sampler("Heun", ("k_heun",), (("second_order", True),)),
    Sampler(
        "DPM2",
        ("k_dpm_2",),
        (("discard_next_to_last_sigma", True), ("second_order", True)),
    ),
    Sampler(
        "DPM2 a",
        ("k_dpm_2_a",),
        (
            ("discard_next_to_last_sigma", True),
            ("uses_ensd", True),
            ("second_order", True),
        ),
    ),
    Sampler("DPM fast", ("k_dpm_fast",), (("uses_ensd", True),)),
    Sampler("DPM adaptive", ("k_dpm_ad",), (("uses_ensd", True),)),
    Sampler("Restart", ("restart",), (("scheduler", "karras"), ("second_order", True))),
    Sampler("DDIM", ("ddim",)),
    Sampler("DDIM CFG++", ("ddim_cfgpp",)),
    Sampler("PLMS", ("plms",)),
    Sampler("UniPC", ("unipc",)),
    Sampler("LCM", ("k_lcm",)),
)
SAMPLERS_BY_NAME = {sampler.name: sampler for sampler in SAMPLERS}
# These run on timesteps, not on a sigma schedule, so no schedule is ever applied.
TIMESTEP_SAMPLERS = frozenset({"DDIM", "DDIM CFG++", "PLMS", "UniPC"})


@dataclass(frozen=True)
class Scheduler:
    """A noise schedule as listed by /sdapi/v1/schedulers."""

    name: str
    label: str
    default_rho: float = -1.0
    need_inner_model: bool = False
    aliases: tuple[str, ...] | None = None

    def as_json(self) -> dict[str, Any]:
        """The webui's SchedulerItem shape."""
        return {
            "name": self.name,
            "label": self.label,
            "aliases": None if self.aliases is None else list(self.aliases),
            "default_rho": self.default_rho,
            "need_inner_model": self.need_inner_model,
        }


SCHEDULERS: tuple[Scheduler, ...] = (
    Scheduler("automatic", "Automatic"),
    Scheduler("uniform", "Uniform", need_inner_model=True),
    Scheduler("karras", "Karras", default_rho=7.0),
    Scheduler("exponential", "Exponential"),
    Scheduler("polyexponential", "Polyexponential", default_rho=1.0),
    Scheduler(
        "sgm_uniform", "SGM Uniform", need_inner_model=True, aliases=("SGMUniform",)
    ),
    Scheduler("kl_optimal", "KL Optimal"),
    Scheduler("align_your_steps", "Align Your Steps"),
    Scheduler("simple", "Simple", need_inner_model=True),
    Scheduler("normal", "Normal", need_inner_model=True),
    Scheduler("ddim", "DDIM", need_inner_model=True),
    Scheduler("beta", "Beta"),
)
# Both names and labels find a scheduler, as in the webui's schedulers_map.
SCHEDULERS_BY_KEY = {s.name: s for s in SCHEDULERS} | {s.label: s for s in SCHEDULERS}


def resolve_sampler(
    sampler_name: str | None,
    scheduler_name: str | None,
    *,
    convert_automatic: bool = True,
) -> tuple[str, str]:
    """Return (sampler, scheduler label) the way the webui resolves a request's pair."""
    default = SAMPLERS[0]
    found = SCHEDULERS_BY_KEY.get(scheduler_name or "", SCHEDULERS[0])
    name = sampler_name or default.name
    # A trailing scheduler label ("DPM++ 2M Karras") is split off the sampler name.
    for scheduler in SCHEDULERS:
        for option in (scheduler.label, *(scheduler.aliases or ())):
            if name.endswith(" " + option):
                found = scheduler
                name = name[: -len(option) - 1]
                break
    sampler = SAMPLERS_BY_NAME.get(name, default)  # aliases are not names: fallback
    # The sampler's own default schedule is reported as "Automatic" to the API.
    if convert_automatic and dict(sampler.options).get("scheduler") == found.name:
        found = SCHEDULERS[0]
    return sampler.name, found.label


@dataclass(frozen=True)
class Checkpoint:
    """A model file as listed by /sdapi/v1/sd-models."""

    filename_stem: str
    extension: str
    sha256: str

    @property
    def shorthash(self) -> str:
        """The 10-hex-digit hash the webui shows in titles and infotexts."""
        return self.sha256[:10]

    @property
    def file_name(self) -> str:
        """The file's name inside the models folder."""
        return f"{self.filename_stem}.{self.extension}"

    @property
    def title(self) -> str:
        """The "file [hash10]" title the options use."""
        return f"{self.file_name} [{self.shorthash}]"

    @property
    def aliases(self) -> tuple[str, ...]:
        """Every string the webui's checkpoint_aliases accepts for this model."""
        return (
            self.title,
            self.file_name,
            self.filename_stem,
            self.shorthash,
            self.sha256,
            f"{self.file_name} [{self.shorthash}]",
            f"{self.filename_stem} [{self.shorthash}]",
        )

    def as_json(self) -> dict[str, Any]:
        """The webui's SDModelItem shape."""
        return {
            "title": self.title,
            "model_name": self.filename_stem,
            "hash": self.shorthash,
            "sha256": self.sha256,
            "filename": f"{WEBUI_ROOT}/models/Stable-diffusion/{self.file_name}",
            "config": None,
        }


# Sorted by file name, as the webui lists them; hashes are the published ones.
CHECKPOINTS: tuple[Checkpoint, ...] = (
    Checkpoint(
        "sd_xl_base_1.0",
        "safetensors",
        "31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6120b893f7e5b",
    ),
    Checkpoint(
        "sd_xl_refiner_1.0",
        "safetensors",
        "7440042bbdc8a24813002c09b6b69b64dc90fded4472613437b7f55f9b7d9c5f",
    ),
    Checkpoint(
        "v1-5-pruned-emaonly",
        "safetensors",
        "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa",
    ),
)
DEFAULT_CHECKPOINT = CHECKPOINTS[2]
# Files in models/VAE, as /sdapi/v1/sd-vae lists them.
VAES: tuple[dict[str, Any], ...] = tuple(
    {"model_name": name, "filename": f"{WEBUI_ROOT}/models/VAE/{name}"}
    for name in ("sdxl_vae.safetensors", "vae-ft-mse-840000-ema-pruned.safetensors")
)
CHECKPOINT_ALIASES = {alias: ckpt for ckpt in CHECKPOINTS for alias in ckpt.aliases}

LATENT_UPSCALE_MODES = (
    "Latent",
    "Latent (antialiased)",
    "Latent (bicubic)",
    "Latent (bicubic antialiased)",
    "Latent (nearest)",
    "Latent (nearest-exact)",
)

_KAIR = "https://github.com/cszn/KAIR/releases/download/v1.0"
_REALESRGAN = "https://github.com/xinntao/Real-ESRGAN/releases/download"


def _upscaler(name: str, model_name: str | None, path: str | None) -> dict[str, Any]:
    return {
        "name": name,
        "model_name": model_name,
        "model_path": path,
        "model_url": None,
        "scale": 4.0,
    }


UPSCALERS: tuple[dict[str, Any], ...] = (
    _upscaler("None", None, None),
    _upscaler("Lanczos", None, None),
    _upscaler("Nearest", None, None),
    _upscaler("ESRGAN_4x", "ESRGAN_4x", f"{_KAIR}/ESRGAN.pth"),
    _upscaler("LDSR", None, None),
    _upscaler("R-ESRGAN 4x+", None, f"{_REALESRGAN}/v0.1.0/RealESRGAN_x4plus.pth"),
    _upscaler(
        "R-ESRGAN 4x+ Anime6B",
        None,
        f"{_REALESRGAN}/v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth",
    ),
    _upscaler("ScuNET GAN", None, None),
    _upscaler("ScuNET PSNR", None, None),
    _upscaler("SwinIR 4x", None, None),
)
UPSCALER_NAMES = frozenset(item["name"] for item in UPSCALERS)

REALESRGAN_MODELS: tuple[dict[str, Any], ...] = (
    {
        "name": "R-ESRGAN General 4xV3",
        "path": f"{_REALESRGAN}/v0.2.5.0/realesr-general-x4v3.pth",
        "scale": 4,
    },
    {
        "name": "R-ESRGAN 4x+",
        "path": f"{_REALESRGAN}/v0.1.0/RealESRGAN_x4plus.pth",
        "scale": 4,
    },
    {
        "name": "R-ESRGAN 4x+ Anime6B",
        "path": f"{_REALESRGAN}/v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth",
        "scale": 4,
    },
)

FACE_RESTORERS: tuple[dict[str, Any], ...] = (
    {"name": "CodeFormer", "cmd_dir": f"{WEBUI_ROOT}/models/Codeformer"},
    {"name": "GFPGAN", "cmd_dir": None},
)


EMBEDDINGS: dict[str, Any] = {
    "loaded": {
        "EasyNegative": {
            "step": None,
            "sd_checkpoint": None,
            "sd_checkpoint_name": None,
            "shape": 768,
            "vectors": 8,
        },
    },
    "skipped": {
        "negativeXL_D": {
            "step": None,
            "sd_checkpoint": None,
            "sd_checkpoint_name": None,
            "shape": 2048,
            "vectors": 8,
        },
    },
}

LORAS: tuple[dict[str, Any], ...] = (
    {
        "name": "add_detail",
        "alias": "add_detail",
        "path": f"{WEBUI_ROOT}/models/Lora/add_detail.safetensors",
        "metadata": {},
    },
)
