"""DreamStudio: teach a Stable Diffusion model one subject with DreamBooth + LoRA."""

__version__ = "0.1.0"
