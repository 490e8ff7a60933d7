"""inuqueue: a durable local queue in front of a Stable Diffusion webui."""

__version__ = "0.1.0"
