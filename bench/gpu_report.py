"""What the GPU check (bench/gpu_check.py) reports: the machine and library versions,
pass/fail against the issue's targets, and the table it prints."""

from __future__ import annotations

import importlib.metadata

import torch

TARGET_STEPS, TARGET_RESOLUTION = 300, 512
TARGET_LOOP_S, TARGET_VRAM_GIB = 20.0, 8.0
GIB = 2**30


def round_figure(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.4g}")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(device: torch.device) -> dict:
    from bench.train import _cpu_name

    env = {"device": str(device), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
           "diffusers": _version("diffusers"), "transformers": _version("transformers"),
           "peft": _version("peft"), "accelerate": _version("accelerate"),
           "bitsandbytes": _version("bitsandbytes"), "xformers": _version("xformers"),
           "cpu": _cpu_name()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env |= {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / GIB, 1),
                "compute_capability": f"{props.major}.{props.minor}"}
    else:
        env["gpu"] = None
    # The trainer turns xformers on by itself on CUDA; generation keeps PyTorch's SDPA.
    env["xformers_in_training"] = bool(env["xformers"]) and device.type == "cuda"
    return env


def verdict(results: dict, device: torch.device, steps: int, resolution: int) -> dict:
    """Pass/fail against the issue's targets, judged only on the run they are set for."""
    plain, low = results.get("train_plain", {}), results.get("train_low_memory", {})
    out = {"target": f"{TARGET_STEPS} steps at {TARGET_RESOLUTION} px, batch 1, rank 4 on "
                     f"CUDA: loop under {TARGET_LOOP_S:g} s, and with gradient checkpointing "
                     f"+ 8-bit AdamW under {TARGET_VRAM_GIB:g} GiB reserved VRAM",
           "projected_300_steps_s": {name: round_figure(r["s_per_step"] * TARGET_STEPS)
                                     for name, r in (("plain", plain), ("low_memory", low))
                                     if r.get("s_per_step")}}
    if device.type != "cuda" or (steps, resolution) != (TARGET_STEPS, TARGET_RESOLUTION):
        return out | {"judged": False, "pass": None, "why_not": "the targets are for "
                      f"--steps {TARGET_STEPS} --resolution {TARGET_RESOLUTION} on CUDA"}
    if "loop_s" not in plain or "loop_s" not in low:
        return out | {"judged": False, "pass": None, "why_not": "a training run failed"}
    low_fast = low["loop_s"] < TARGET_LOOP_S
    low_small = low["peak_vram_reserved_gib"] < TARGET_VRAM_GIB
    out |= {"judged": True, "plain_under_20_s": plain["loop_s"] < TARGET_LOOP_S,
            "low_memory_under_20_s": low_fast, "low_memory_under_8_gib": low_small,
            "pass": low_fast and low_small}
    if not low["use_8bit_adam"]:
        out["note"] = f"judged with checkpointing alone: 8-bit AdamW {low['eight_bit_adam']}"
    return out


def print_table(results: dict) -> None:
    env = results["environment"]
    print(f"\n{env['gpu'] or env['cpu']} | torch {env['torch']} | diffusers {env['diffusers']}"
          f" | precision {results['precision']} | xformers {env['xformers'] or 'not installed'}")
    print(f"{'phase':<36}{'s/step':>8}{'loop s':>8}{'total s':>9}{'alloc GiB':>11}"
          f"{'resv GiB':>10}")
    for name in ("train_plain", "train_low_memory"):
        r = results.get(name, {})
        label = "train, " + ("plain" if name == "train_plain" else "checkpointing") + (
            " + 8-bit AdamW" if r.get("eight_bit_adam") == "used" else "")
        if "error" in r:
            print(f"{label:<36}failed: {r['error']}")
            continue
        print(f"{label:<36}{_cell(r.get('s_per_step'))}{_cell(r.get('loop_s'))}"
              f"{_cell(r.get('total_s'), 9)}{_cell(r.get('peak_vram_allocated_gib'), 11)}"
              f"{_cell(r.get('peak_vram_reserved_gib'), 10)}")
        if r.get("eight_bit_adam", "used") != "used":
            print(f"{'':<4}8-bit AdamW {r['eight_bit_adam']}")
    g = results.get("generate", {})
    if "error" in g:
        print(f"{'generate':<36}failed: {g['error']}")
    elif g:
        vram = (f", peak VRAM {g['peak_vram_allocated_gib']} GiB allocated, "
                f"{g['peak_vram_reserved_gib']} GiB reserved"
                if g["peak_vram_reserved_gib"] is not None else "")
        print(f"generate {g['images']} x {g['size'][0]} px, {g['image_steps']} steps, "
              f"{g['dtype']}: {g['seconds']} s = {g['images_per_s']} images/s{vram}")
    v = results.get("verdict", {})
    if v.get("judged"):
        print(f"targets: {'PASS' if v['pass'] else 'FAIL'} ({v['target']})"
              + (f"; {v['note']}" if v.get("note") else ""))
    else:
        print(f"targets: not judged ({v.get('why_not')})")


def _cell(value, width: int = 8) -> str:
    return f"{'-' if value is None else value:>{width}}"
