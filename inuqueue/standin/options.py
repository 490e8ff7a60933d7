"""The webui's settings (opts) and launch flags, with their API semantics."""

from __future__ import annotations

from typing import Any

from inuqueue.standin.catalog import DEFAULT_CHECKPOINT, WEBUI_ROOT
from inuqueue.standin.webhttp import WebuiFailure
from inuqueue.webui_schema import FieldSpec

# A representative part of v1.10's settings, with their stock defaults.
OPTION_DEFAULTS: dict[str, Any] = {
    "samples_save": True,
    "samples_format": "png",
    "samples_filename_pattern": "",
    "save_images_add_number": True,
    "grid_save": True,
    "grid_format": "png",
    "grid_extended_filename": False,
    "grid_only_if_multiple": True,
    "grid_prevent_empty_spots": False,
    "n_rows": -1,
    "enable_pnginfo": True,
    "save_txt": False,
    "jpeg_quality": 80,
    "webp_lossless": False,
    "export_for_4chan": True,
    "img_downscale_threshold": 4.0,
    "target_side_length": 4000,
    "outdir_samples": "",
    "outdir_txt2img_samples": "outputs/txt2img-images",
    "outdir_img2img_samples": "outputs/img2img-images",
    "outdir_extras_samples": "outputs/extras-images",
    "outdir_grids": "",
    "outdir_txt2img_grids": "outputs/txt2img-grids",
    "outdir_img2img_grids": "outputs/img2img-grids",
    "save_to_dirs": True,
    "ESRGAN_tile": 192,
    "ESRGAN_tile_overlap": 8,
    "face_restoration": False,
    "face_restoration_model": "CodeFormer",
    "code_former_weight": 0.5,
    "memmon_poll_rate": 8,
    "sd_model_checkpoint": DEFAULT_CHECKPOINT.title,
    "sd_checkpoints_limit": 1,
    "sd_checkpoint_hash": DEFAULT_CHECKPOINT.sha256,
    "sd_vae": "Automatic",
    "sd_vae_overrides_per_model_preferences": True,
    "sd_vae_encode_method": "Full",
    "sd_vae_decode_method": "Full",
    "CLIP_stop_at_last_layers": 1,
    "upcast_attn": False,
    "randn_source": "GPU",
    "tiling": False,
    "emphasis": "Original",
    "use_old_scheduling": False,
    "persistent_cond_cache": True,
    "img2img_color_correction": False,
    "img2img_fix_steps": False,
    "img2img_background_color": "#ffffff",
    "initial_noise_multiplier": 1.0,
    "inpainting_mask_weight": 1.0,
    "hires_fix_use_firstpass_conds": False,
    "use_old_hires_fix_width_height": False,
    "disable_weights_auto_swap": True,
    "eta_ddim": 0.0,
    "eta_ancestral": 1.0,
    "s_min_uncond": 0.0,
    "s_churn": 0.0,
    "s_tmin": 0.0,
    "s_tmax": 0.0,
    "s_noise": 1.0,
    "eta_noise_seed_delta": 0,
    "token_merging_ratio": 0.0,
    "token_merging_ratio_hr": 0.0,
    "return_grid": True,
    "return_mask": False,
    "return_mask_composite": False,
    "add_model_hash_to_info": True,
    "add_model_name_to_info": True,
    "add_user_name_to_info": False,
    "add_version_to_infotext": True,
    "add_vae_name_to_info": True,
    "add_vae_hash_to_info": True,
    "show_progressbar": True,
    "live_previews_enable": True,
    "live_previews_image_format": "png",
    "show_progress_grid": True,
    "show_progress_every_n_steps": 10,
    "show_progress_type": "Approx NN",
    "live_preview_refresh_period": 1000,
    "send_seed": True,
    "send_size": True,
    "quicksettings_list": ["sd_model_checkpoint"],
    "hidden_tabs": [],
    "ui_reorder_list": [],
    "disabled_extensions": [],
    "disable_all_extensions": "none",
    "api_enable_requests": True,
    "api_forbid_local_requests": True,
    "api_useragent": "",
    "auto_launch_browser": "Local",
    "show_warnings": False,
}

# Settings the webui refuses to change through the API (silently).
RESTRICTED_API_OPTIONS = frozenset(
    {"api_enable_requests", "api_forbid_local_requests", "api_useragent"}
)


def _response_spec(default: object) -> FieldSpec:
    """The response-model type of a setting: a truthy int default makes it float."""
    if not default:
        return FieldSpec("any")
    if isinstance(default, bool):
        return FieldSpec("bool")
    if isinstance(default, (int, float)):
        return FieldSpec("float")
    if isinstance(default, str):
        return FieldSpec("str")
    return FieldSpec("any")


OPTION_RESPONSE_SPECS = {
    key: _response_spec(value) for key, value in OPTION_DEFAULTS.items()
}


def options_response(data: dict[str, Any]) -> dict[str, Any]:
    """Every setting as GET /sdapi/v1/options shows it, typed by the response model."""
    result: dict[str, Any] = {}
    problems: list[str] = []
    for key, spec in OPTION_RESPONSE_SPECS.items():
        value, errors = spec.coerce(data.get(key), ("response", key))
        result[key] = value
        problems += [
            f"response -> {key}\n  {e['msg']} (type={e['type']})" for e in errors
        ]
    if problems:
        count = len(problems)
        plural = "s" if count > 1 else ""
        header = f"{count} validation error{plural} for Options"
        # FastAPI's response validation fails: the webui answers 500 ValidationError.
        raise WebuiFailure("ValidationError", "\n".join([header, *problems]))
    return result


def cmd_flags(api_auth: str | None) -> dict[str, Any]:
    """The launch flags as /sdapi/v1/cmd-flags reports them (auth in clear text)."""
    return {
        "f": False,
        "update_all_extensions": False,
        "skip_python_version_check": False,
        "skip_torch_cuda_test": True,
        "reinstall_xformers": False,
        "reinstall_torch": False,
        "update_check": False,
        "test_server": False,
        "log_startup": False,
        "skip_prepare_environment": False,
        "skip_install": False,
        "dump_sysinfo": False,
        "loglevel": None,
        "do_not_download_clip": False,
        "data_dir": WEBUI_ROOT,
        "models_dir": None,
        "config": f"{WEBUI_ROOT}/configs/v1-inference.yaml",
        "ckpt": f"{WEBUI_ROOT}/model.ckpt",
        "ckpt_dir": None,
        "vae_dir": None,
        "gfpgan_dir": "./GFPGAN",
        "gfpgan_model": None,
        "no_half": False,
        "no_half_vae": False,
        "no_progressbar_hiding": False,
        "max_batch_count": 16,
        "embeddings_dir": f"{WEBUI_ROOT}/embeddings",
        "textual_inversion_templates_dir": f"{WEBUI_ROOT}/textual_inversion_templates",
        "hypernetwork_dir": f"{WEBUI_ROOT}/models/hypernetworks",
        "localizations_dir": f"{WEBUI_ROOT}/localizations",
        "allow_code": False,
        "medvram": False,
        "medvram_sdxl": False,
        "lowvram": False,
        "lowram": False,
        "always_batch_cond_uncond": False,
        "unload_gfpgan": False,
        "precision": "autocast",
        "upcast_sampling": False,
        "share": False,
        "ngrok": None,
        "ngrok_region": "",
        "ngrok_options": {},
        "enable_insecure_extension_access": False,
        "xformers": False,
        "force_enable_xformers": False,
        "xformers_flash_attention": False,
        "deepdanbooru": False,
        "opt_split_attention": False,
        "opt_sub_quad_attention": False,
        "opt_sdp_attention": False,
        "disable_opt_split_attention": False,
        "disable_nan_check": False,
        "use_cpu": [],
        "use_ipex": False,
        "disable_model_loading_ram_optimization": False,
        "listen": False,
        "port": None,
        "show_negative_prompt": False,
        "ui_config_file": f"{WEBUI_ROOT}/ui-config.json",
        "hide_ui_dir_config": False,
        "freeze_settings": False,
        "freeze_settings_in_sections": None,
        "freeze_specific_settings": None,
        "ui_settings_file": f"{WEBUI_ROOT}/config.json",
        "gradio_debug": False,
        "gradio_auth": None,
        "gradio_auth_path": None,
        "gradio_img2img_tool": None,
        "gradio_inpaint_tool": None,
        "gradio_allowed_path": [],
        "opt_channelslast": False,
        "styles_file": [f"{WEBUI_ROOT}/styles.csv"],
        "autolaunch": False,
        "theme": None,
        "use_textbox_seed": False,
        "disable_console_progressbars": False,
        "enable_console_prompts": False,
        "vae_path": None,
        "disable_safe_unpickle": False,
        "api": True,
        "api_auth": api_auth,
        "api_log": False,
        "nowebui": False,
        "ui_debug_mode": False,
        "device_id": None,
        "administrator": False,
        "cors_allow_origins": None,
        "cors_allow_origins_regex": None,
        "tls_keyfile": None,
        "tls_certfile": None,
        "disable_tls_verify": False,
        "server_name": None,
        "gradio_queue": True,
        "no_gradio_queue": False,
        "skip_version_check": False,
        "no_hashing": False,
        "no_download_sd_model": False,
        "subpath": None,
        "add_stop_route": False,
        "api_server_stop": False,
        "timeout_keep_alive": 30,
        "disable_all_extensions": False,
        "disable_extra_extensions": False,
        "skip_load_model_at_start": False,
        "unix_filenames_sanitization": False,
        "filenames_max_length": 128,
        "no_prompt_history": False,
    }


def memory_report(rss_bytes: int, total_bytes: int) -> dict[str, Any]:
    """The /sdapi/v1/memory shape of a machine without CUDA."""
    total = float(total_bytes)
    return {
        "ram": {"free": total - rss_bytes, "used": rss_bytes, "total": total},
        "cuda": {"error": "unavailable"},
    }
