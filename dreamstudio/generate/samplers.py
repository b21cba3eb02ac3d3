"""Samplers (diffusers schedulers) by the names AUTOMATIC1111 and image sites use.

A sampler is switched on an already loaded pipeline by building the new scheduler from the
config of the scheduler the model shipped with (its noise schedule, prediction type and
timestep spacing), so nothing is reloaded and "Default" can always return to the original.
"""

from __future__ import annotations

DEFAULT_SAMPLER = "Default"

# name -> (diffusers class, settings layered over the model's own scheduler config)
SAMPLERS: dict[str, tuple[str, dict]] = {
    DEFAULT_SAMPLER: ("", {}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler",
                        {"algorithm_type": "dpmsolver++", "solver_order": 2,
                         "use_karras_sigmas": True}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler",
                 {"algorithm_type": "dpmsolver++", "solver_order": 2,
                  "use_karras_sigmas": False}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Euler": ("EulerDiscreteScheduler", {"use_karras_sigmas": False}),
    "DDIM": ("DDIMScheduler", {}),
    "UniPC": ("UniPCMultistepScheduler", {}),
}
SAMPLER_NAMES = tuple(SAMPLERS)

# How A1111 names the schedulers a model may ship with (for "Default" in the metadata).
_A1111_NAMES = {
    "PNDMScheduler": "PLMS",
    "DDIMScheduler": "DDIM",
    "EulerAncestralDiscreteScheduler": "Euler a",
    "EulerDiscreteScheduler": "Euler",
    "LMSDiscreteScheduler": "LMS",
    "HeunDiscreteScheduler": "Heun",
    "UniPCMultistepScheduler": "UniPC",
    "LCMScheduler": "LCM",
    "DPMSolverSinglestepScheduler": "DPM++ 2S",
}


def a1111_name(scheduler) -> str:
    """The A1111 sampler name of a scheduler instance, e.g. 'DPM++ 2M Karras' or 'PLMS'."""
    cls = type(scheduler).__name__
    config = scheduler.config
    if cls == "DPMSolverMultistepScheduler":
        name = "DPM++ 2M SDE" if "sde" in str(config.get("algorithm_type", "")) else "DPM++ 2M"
    else:
        name = _A1111_NAMES.get(cls, cls)
    if config.get("use_karras_sigmas"):
        name += " Karras"
    return name


def make_scheduler(name: str, original):
    """A new scheduler `name` from the config of `original` (the model's own scheduler).

    "Default" returns `original` itself: the model's sampler exactly as it was loaded.
    """
    if name not in SAMPLERS:
        raise KeyError(name)
    cls_name, overrides = SAMPLERS[name]
    if not cls_name:
        return original
    import diffusers

    cls = getattr(diffusers, cls_name)
    return cls.from_config(original.config, **overrides)


def choice_for(stored: str | None) -> str:
    """The sampler choice for a value read from an older PNG (unknown ones: Default)."""
    return stored if stored in SAMPLERS else DEFAULT_SAMPLER
