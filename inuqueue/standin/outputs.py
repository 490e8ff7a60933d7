"""What a finished job sends back: base64 PNGs, the echoed parameters, the info JSON."""

from __future__ import annotations

import json
from typing import Any

from inuqueue.standin.catalog import VERSION
from inuqueue.standin.generation import Processed
from inuqueue.standin.images import b64encode_sliced, make_grid_png, make_png
from inuqueue.standin.job import Job
from inuqueue.standin.webhttp import encode_json


def encode_pictures(job: Job, processed: Processed, *, noise: bool) -> list[bytes]:
    """Every returned image (grid first) as ASCII base64 of a PNG; CPU-bound."""
    with_text = bool(job.options["enable_pnginfo"])
    images: list[bytes] = []
    pictures = processed.pictures
    if processed.grid_infotext is not None:
        cells = [(picture.seed, picture.completion) for picture in pictures]
        grid = make_grid_png(
            cells,
            pictures[0].width,
            pictures[0].height,
            processed.grid_columns,
            infotext=processed.grid_infotext if with_text else None,
        )
        images.append(b64encode_sliced(grid))
    for picture in pictures:
        png = make_png(
            picture.seed,
            picture.width,
            picture.height,
            infotext=picture.infotext if with_text else None,
            completion=picture.completion,
            noise=noise,
        )
        images.append(b64encode_sliced(png))
    return images


def encode_reply(images: list[bytes], parameters: dict[str, Any], info: str) -> bytes:
    """The reply's JSON bytes, exactly as encode_json would write them.

    Base64 never needs JSON escaping, so the pictures are joined in rather than
    serialised: json.dumps would hold the GIL for a long scan of every megabyte.
    """
    pictures = b'["' + b'","'.join(images) + b'"]' if images else b"[]"
    return b"".join(
        [
            b'{"images":',
            pictures,
            b',"parameters":',
            encode_json(parameters),
            b',"info":',
            encode_json(info),
            b"}",
        ]
    )


def build_info(job: Job, processed: Processed, job_timestamp: str) -> str:
    """The ``info`` string: Processed.js(), unserialisable values turned to null."""
    restore_faces = job["restore_faces"]
    infotexts = processed.infotexts
    obj = {
        "prompt": (job.all_prompts or [job["prompt"]])[0],
        "all_prompts": job.all_prompts or [job["prompt"]],
        "negative_prompt": (job.all_negative or [job["negative_prompt"]])[0],
        "all_negative_prompts": job.all_negative or [job["negative_prompt"]],
        # Nothing planned (n_iter or batch_size 0) fails here upstream: IndexError.
        "seed": job.all_seeds[0],
        "all_seeds": job.all_seeds,
        "subseed": job.all_subseeds[0],
        "all_subseeds": job.all_subseeds,
        "subseed_strength": job["subseed_strength"],
        "width": job["width"],
        "height": job["height"],
        "sampler_name": job.sampler,
        "cfg_scale": job["cfg_scale"],
        "steps": job["steps"],
        "batch_size": job["batch_size"],
        "restore_faces": restore_faces,
        "face_restoration_model": job.options["face_restoration_model"]
        if restore_faces
        else None,
        "sd_model_name": job.checkpoint.filename_stem,
        "sd_model_hash": job.checkpoint.shorthash,
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": job["seed_resize_from_w"],
        "seed_resize_from_h": job["seed_resize_from_h"],
        "denoising_strength": job["denoising_strength"],
        "extra_generation_params": job.extra,
        "index_of_first_image": processed.index_of_first_image,
        "infotexts": infotexts,
        "styles": job["styles"] or [],
        "job_timestamp": job_timestamp,
        "clip_skip": job.options["CLIP_stop_at_last_layers"],
        "is_using_inpainting_conditioning": False,
        "version": VERSION,
    }
    # The webui uses json.dumps' defaults here (ASCII escapes, ", " separators).
    return json.dumps(obj, default=lambda _unserialisable: None)


def echoed_parameters(kind: str, values: dict[str, Any]) -> dict[str, Any]:
    """The request as validated; img2img drops its images unless asked to keep them."""
    parameters = dict(values)
    if kind == "img2img" and not parameters["include_init_images"]:
        parameters["init_images"] = None
        parameters["mask"] = None
    return parameters
