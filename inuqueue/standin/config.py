"""The stand-in webui's settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StandinConfig:
    """How the stand-in behaves; every default gives a quick, faithful webui."""

    # Simulated work per sampling step; 0 runs a whole job without yielding.
    step_ms: float = 20.0
    # Like the webui's --api-auth: "user:pass[,user2:pass2]" guards /sdapi/v1/*.
    api_auth: str | None = None
    # Incompressible pixels, for benchmarks that need big images on the wire.
    noise_images: bool = False
