"""Training benchmark: `python -m bench.train --model DIR [...]`.

Prints figures and writes JSON: steps/s, seconds for whole runs (with class images), peak
memory, and the share of the machine's matmul throughput the UNet step reaches. With
`--compare-script PATH` (diffusers' examples/dreambooth/train_dreambooth_lora.py) it runs
that script side by side on the same photos and settings.

Per-step figures come from two runs of different length (`--short`, `--long` steps): the
wall-time difference divided by the step difference, so model loading and start-up cancel
out the same way for every trainer.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from dreamstudio.config import TrainConfig
from dreamstudio.core.devices import cpu_has_bf16
from tests.support.sample_photos import find_datasets

PROMPT, CLASS_PROMPT = "a photo of sks dog", "a photo of dog"
DEFAULT_PHOTOS = find_datasets() / "dog"
# ours_cmd leaves the learning rate at our default; their script gets the same one.
_OUR_LR = next(f.default for f in dataclasses.fields(TrainConfig) if f.name == "learning_rate")


def _timed(cmd: list[str], env: dict | None = None) -> dict:
    """Wall seconds and peak RSS of a command (from wait4, not polled); raises if it fails."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})}, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... failed ({proc.returncode}):\n{output[-3000:]}")
    return {"wall_s": round(wall, 2), "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2),
            "output_tail": output[-400:]}


def ours_cmd(model, photos, out, steps, precision, text_encoder, resolution,
             class_dir=None, num_class=0) -> list[str]:
    cmd = [sys.executable, "-m", "dreamstudio", "train", "--model", str(model),
           "--instance-dir", str(photos), "--instance-prompt", PROMPT, "--output", str(out),
           "--steps", str(steps), "--resolution", str(resolution), "--rank", "4",
           "--batch-size", "1", "--seed", "0", "--mixed-precision", precision,
           "--validation-every", "0", "--checkpoint-every", "0", "--no-kohya"]
    if not text_encoder:
        cmd.append("--no-text-encoder")
    if class_dir:
        cmd += ["--class-dir", str(class_dir), "--class-prompt", CLASS_PROMPT,
                "--num-class-images", str(num_class)]
    return cmd


def theirs_cmd(script, model, photos, out, steps, precision, resolution,
               class_dir=None, num_class=0) -> list[str]:
    cmd = [sys.executable, str(script), "--pretrained_model_name_or_path", str(model),
           "--instance_data_dir", str(photos), "--instance_prompt", PROMPT,
           "--output_dir", str(out), "--resolution", str(resolution), "--train_batch_size", "1",
           "--max_train_steps", str(steps), "--rank", "4", "--seed", "0",
           "--learning_rate", str(_OUR_LR), "--lr_warmup_steps", "0", "--checkpointing_steps", "100000"]
    if precision:
        cmd += ["--mixed_precision", precision]
    if class_dir:
        cmd += ["--with_prior_preservation", "--class_data_dir", str(class_dir),
                "--class_prompt", CLASS_PROMPT, "--num_class_images", str(num_class)]
    return cmd


def per_step(make_cmd, short: int, long: int, workdir: Path, env=None) -> dict:
    a = _timed(make_cmd(workdir / f"s{short}", short), env)
    b = _timed(make_cmd(workdir / f"s{long}", long), env)
    seconds = (b["wall_s"] - a["wall_s"]) / (long - short)
    info = workdir / f"s{long}" / "dreamstudio_lora.json"
    loop = json.loads(info.read_text()).get("steps_per_second") if info.is_file() else None
    return {"in_process_loop_steps_per_s": loop, "s_per_step": round(seconds, 3),
            "steps_per_s": round(1 / seconds, 4),
            "wall_short_s": a["wall_s"], "wall_long_s": b["wall_s"],
            "peak_rss_gib": max(a["peak_rss_gib"], b["peak_rss_gib"])}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _median_run(runs: list[dict]) -> dict:
    ordered = sorted(runs, key=lambda r: r["s_per_step"])
    middle = ordered[(len(ordered) - 1) // 2]
    return {**middle, "s_per_step_all": [r["s_per_step"] for r in runs]}


def matmul_peak_tflops(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times) / 1e12


def unet_step_share(model: Path, resolution: int, dtype: torch.dtype, repeats: int = 8) -> dict:
    """FLOPs and time of one LoRA UNet forward+backward as the trainer runs it."""
    from torch.utils.flop_counter import FlopCounterMode

    from bench.step_profile import lora_unet, make_step
    from dreamstudio.core.cpu_memory import reuse_freed_memory

    step = make_step(lora_unet(model, dtype), resolution, dtype)

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    times = []
    with reuse_freed_memory(torch.device("cpu")):  # as the trainer runs its loop
        step()  # the first step in the block maps the memory the others reuse
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    peak = matmul_peak_tflops(dtype)
    return {"dtype": str(dtype).replace("torch.", ""), "tflop_per_step": _sig(flops / 1e12),
            "step_s": _sig(seconds), "step_s_all": [_sig(t) for t in times],
            "achieved_tflops": _sig(flops / seconds / 1e12),
            "matmul_peak_tflops": _sig(peak),
            "share_of_peak": _sig(flops / seconds / 1e12 / peak),
            "note": "median step; matmul peak is the best of 10 square matmuls (n=2048)"}


def _sig(value: float) -> float:
    """Four significant digits: tiny test models and SD 1.5 differ by orders of magnitude."""
    return float(f"{value:.4g}")


def class_generation_estimate(model: Path, num_images: int, batch: int, steps: int,
                              side: int | None = None) -> dict:
    """Time of diffusers' default class-image sampling (what the example script runs:
    pipeline(prompts) at the model's size, default scheduler and steps, fp32 on CPU),
    measured on 1 and 3 sampler steps and extrapolated to `steps`. `side` draws at another
    size instead (the script itself ignores --resolution here)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    side = side or pipe.unet.config.sample_size * pipe.vae_scale_factor
    timings = {}
    for n in (1, 3):
        start = time.perf_counter()
        pipe([CLASS_PROMPT] * batch, num_inference_steps=n, height=side, width=side)
        timings[n] = time.perf_counter() - start
    per_step = (timings[3] - timings[1]) / 2
    fixed = timings[1] - per_step
    batches = -(-num_images // batch)
    return {"per_sampler_step_s": round(per_step, 2), "per_batch_fixed_s": round(fixed, 2),
            "estimated_total_s": round(batches * (fixed + per_step * steps), 1),
            "note": f"{batches} batch(es) of {batch} at {side} px, "
                    f"{steps} steps, extrapolated from 1- and 3-step runs"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.train", description=__doc__)
    parser.add_argument("--model", type=Path, help="Diffusers model folder.")
    parser.add_argument("--build-sd15", type=Path,
                        help="Build SD 1.5's architecture with random weights here first.")
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--short", type=int, default=3)
    parser.add_argument("--long", type=int, default=11)
    parser.add_argument("--repeats", type=int, default=1,
                        help="Measure each trainer this many times (median counts).")
    parser.add_argument("--class-images", type=int, default=8)
    parser.add_argument("--prior-steps", type=int, default=20,
                        help="Training steps of the end-to-end prior-preservation run.")
    parser.add_argument("--compare-script", type=Path,
                        help="diffusers examples/dreambooth/train_dreambooth_lora.py")
    parser.add_argument("--only", default="share,profile,ours,theirs,prior",
                        help="Comma list of parts: share, profile, compile, ours, theirs, "
                             "prior (compile is off by default: it takes minutes).")
    parser.add_argument("--json", type=Path, default=Path("bench-results.json"))
    args = parser.parse_args(argv)
    if args.build_sd15:
        from bench.sd15 import save_sd15_architecture

        if not (args.build_sd15 / "model_index.json").is_file():
            save_sd15_architecture(args.build_sd15)
        args.model = args.build_sd15
    if args.model is None:
        parser.error("give --model DIR or --build-sd15 DIR")
    parts = set(args.only.split(","))
    env = {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    results: dict = {"machine": {"cpu": _cpu_name(),
                                 "cores": os.cpu_count(), "torch": torch.__version__,
                                 "cpu_bf16_units": cpu_has_bf16(),
                                 "cuda": torch.cuda.is_available()},
                     "model": str(args.model), "resolution": args.resolution,
                     "steps_short_long": [args.short, args.long]}
    work = Path(tempfile.mkdtemp(prefix="dreamstudio-bench-"))

    def report(key, value):
        results[key] = value
        print(f"{key}: {json.dumps(value)}", flush=True)
        args.json.write_text(json.dumps(results, indent=2))

    try:
        if "share" in parts:
            for dtype in (torch.bfloat16, torch.float32):
                report(f"unet_step_{str(dtype)[6:]}",
                       unet_step_share(args.model, args.resolution, dtype))
        if "profile" in parts:
            from bench.step_profile import profile_step

            report("unet_step_profile_bfloat16",
                   profile_step(args.model, args.resolution, torch.bfloat16))
        if "compile" in parts:
            from bench.step_profile import compile_trial

            report("torch_compile_bfloat16",
                   compile_trial(args.model, args.resolution, torch.bfloat16))
        res = args.resolution
        configs = []
        if "ours" in parts:
            configs += [(name, lambda out, n, p=precision, te=te: ours_cmd(
                args.model, args.photos, out, n, p, te, res))
                for name, precision, te in (("ours_fp32", "no", False),
                                            ("ours_bf16", "bf16", False),
                                            ("ours_default", "auto", True))]
        if "theirs" in parts and args.compare_script:
            configs += [(name, lambda out, n, p=precision: theirs_cmd(
                args.compare_script, args.model, args.photos, out, n, p, res))
                for name, precision in (("theirs_fp32", "no"), ("theirs_bf16", "bf16"))]
        # Repeats go round all configs in turn, so a slow spell of a shared machine hits
        # every trainer alike; the median run of each counts.
        runs: dict[str, list[dict]] = {name: [] for name, _ in configs}
        for repeat in range(args.repeats):
            for name, make_cmd in configs:
                runs[name].append(per_step(make_cmd, args.short, args.long,
                                           work / f"{name}-{repeat}", env))
                report(name, _median_run(runs[name]))
        if "theirs_fp32" in results:
            results["theirs_default"] = {**results["theirs_fp32"],
                                         "note": "its default precision is fp32 (no)"}
        if "prior" in parts:
            class_dir = work / "class-ours"
            report("ours_prior_end_to_end", _timed(ours_cmd(
                args.model, args.photos, work / "prior-ours", args.prior_steps, "auto", True,
                res, class_dir, args.class_images), env) | {"training_steps": args.prior_steps})
            if args.compare_script:
                report("theirs_class_images_estimate", class_generation_estimate(
                    args.model, args.class_images, 4, 50))
                # Like for like: what their class images would cost at our training size.
                report("theirs_class_images_estimate_at_resolution", class_generation_estimate(
                    args.model, args.class_images, 4, 50, side=res))
        _summary(results)
        args.json.write_text(json.dumps(results, indent=2))
        print(f"written {args.json}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _summary(r: dict) -> None:
    def ratio(a, b):
        if a in r and b in r:
            return round(r[b]["s_per_step"] / r[a]["s_per_step"], 2)
        return None

    speedups = {"fp32_vs_fp32": ratio("ours_fp32", "theirs_fp32"),
                "bf16_vs_bf16": ratio("ours_bf16", "theirs_bf16"),
                "defaults": ratio("ours_default", "theirs_default")}
    if "ours_prior_end_to_end" in r and "theirs_class_images_estimate" in r and \
            "theirs_fp32" in r:
        steps = r["ours_prior_end_to_end"]["training_steps"]
        theirs = (r["theirs_class_images_estimate"]["estimated_total_s"]
                  + r["theirs_fp32"]["wall_short_s"] + steps * r["theirs_fp32"]["s_per_step"])
        ours = r["ours_prior_end_to_end"]["wall_s"]
        speedups["prior_end_to_end"] = round(theirs / ours, 2)
        speedups["prior_theirs_estimated_s"] = round(theirs, 1)
        same_size = r.get("theirs_class_images_estimate_at_resolution")
        if same_size:
            theirs_same = theirs - r["theirs_class_images_estimate"]["estimated_total_s"] \
                + same_size["estimated_total_s"]
            speedups["prior_end_to_end_same_class_image_size"] = round(theirs_same / ours, 2)
    r["speedups"] = speedups
    print("speedups:", json.dumps(speedups))


if __name__ == "__main__":
    sys.exit(main())
