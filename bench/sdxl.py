"""SDXL training speed against diffusers' script: `python -m bench.sdxl --json FILE [...]`.

Trains SDXL base 1.0's architecture (random weights, built once offline by bench.sdxl_arch)
with our trainer and with diffusers' examples/dreambooth/train_dreambooth_lora_sdxl.py
(`--diffusers-script PATH`, not part of this repository), side by side: same photos, same
resolution (512 px), batch 1, rank 4, same precision (bf16 where the CPU has it), same
learning rate, the UNet's LoRA only unless `--train-text-encoder` (then both sides train
both text encoders). Each side runs in its own process; the sides alternate (ours, theirs,
ours, theirs, ...) so a slow spell of the machine falls on both.

How each side is measured (the same for both, see bench.sdxl_timing): a run trains
`--warmup` + `--steps` steps; its seconds per step are the time between the reports of the
last warm-up step and the last step, divided by `--steps`, timed as each process's progress
lines arrive. Peak RSS is the process's high-water mark when its last step is reported.
Medians over the rounds are printed and written as JSON with the machine's description.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from bench.sdxl_ours import STEP_PATTERN as OUR_STEP_PATTERN
from bench.sdxl_timing import available_gib, timed_run
from dreamstudio.config import TrainConfig, default_of
from tests.support.sample_photos import find_datasets

REPO = Path(__file__).resolve().parents[1]
PROMPT = "a photo of sks dog"
DEFAULT_MODEL = Path("/tmp/sdxlarch")
DEFAULT_PHOTOS = find_datasets() / "dog"
# tqdm's report in their script: "Steps:  50%|█████     | 2/4 [00:10<00:10, ...]".
THEIR_STEP_PATTERN = r"Steps:\s*\d+%\|[^|]*\|\s*(\d+)/(\d+) \["
SIDES = ("ours", "theirs")


@dataclasses.dataclass(frozen=True)
class Settings:
    """What both sides are given alike."""

    model: Path
    photos: Path
    resolution: int = 512
    rank: int = 4
    precision: str = "bf16"
    steps: int = 4
    warmup: int = 1
    train_text_encoder: bool = False
    # Speed does not depend on it, but both get the same: our default.
    learning_rate: float = default_of(TrainConfig, "learning_rate")

    @property
    def total_steps(self) -> int:
        return self.warmup + self.steps


def ours_cmd(s: Settings, out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "bench.sdxl_ours", "--model", str(s.model),
           "--photos", str(s.photos), "--prompt", PROMPT, "--output", str(out),
           "--steps", str(s.total_steps), "--resolution", str(s.resolution),
           "--rank", str(s.rank), "--precision", s.precision]
    return cmd + (["--train-text-encoder"] if s.train_text_encoder else [])


def theirs_cmd(s: Settings, script: Path, out: Path) -> list[str]:
    # No --push_to_hub, --validation_prompt nor model card: nothing reaches for the Hub.
    cmd = [sys.executable, str(script), "--pretrained_model_name_or_path", str(s.model),
           "--instance_data_dir", str(s.photos), "--instance_prompt", PROMPT,
           "--output_dir", str(out), "--resolution", str(s.resolution), "--center_crop",
           "--train_batch_size", "1", "--max_train_steps", str(s.total_steps),
           "--rank", str(s.rank), "--seed", "0", "--learning_rate", str(s.learning_rate),
           "--lr_scheduler", "constant", "--lr_warmup_steps", "0",
           "--checkpointing_steps", "1000000", "--mixed_precision", s.precision]
    return cmd + (["--train_text_encoder"] if s.train_text_encoder else [])


def side_env(side: str, deps: Path | None) -> dict[str, str]:
    """Offline, unbuffered; ours imports this checkout, theirs its extra packages."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "PYTHONUNBUFFERED": "1", "TQDM_MININTERVAL": "0"}
    paths = [str(REPO)] if side == "ours" else ([str(deps)] if deps and deps.is_dir() else [])
    paths += [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def run_side(side: str, s: Settings, work: Path, script: Path | None, deps: Path | None,
             min_free_gib: float, stop_when_trained: bool = True) -> dict:
    """One run of one side: its seconds per step and peak memory (bench.sdxl_timing)."""
    out = Path(tempfile.mkdtemp(prefix=f"{side}-", dir=work))
    cmd, pattern = ((ours_cmd(s, out), OUR_STEP_PATTERN) if side == "ours"
                    else (theirs_cmd(s, script, out), THEIR_STEP_PATTERN))
    times = timed_run(cmd, side_env(side, deps), pattern, s.total_steps,
                      stop_when_trained=stop_when_trained, min_free_gib=min_free_gib,
                      cwd=REPO)
    shutil.rmtree(out, ignore_errors=True)
    per_step = times.seconds_per_step(s.warmup, s.total_steps)
    run = {"s_per_step": _sig(per_step), "steps_per_s": _sig(1 / per_step),
           "until_first_step_s": round(times.arrivals[1], 2) if 1 in times.arrivals else None,
           "wall_s": round(times.wall_s, 2),
           "peak_rss_training_gib": _gib(times.peak_rss_training_gib),
           "peak_rss_process_gib": _gib(times.peak_rss_process_gib),
           "stopped_after_training": times.stopped_after_training}
    if side == "ours":
        run["s_per_step_trainer_clock"] = _sig(_own_clock(times.reports, s))
    return run


def _own_clock(reports: dict[int, str], s: Settings) -> float | None:
    """Our seconds per step from the times our process printed in its step lines (a check
    on the arrival times: the two differ by the pipe's latency only)."""
    stamps = {}
    for step in (s.warmup, s.total_steps):
        match = re.search(r" t=([\d.]+)", reports.get(step, ""))
        if match is None:
            return None
        stamps[step] = float(match.group(1))
    return (stamps[s.total_steps] - stamps[s.warmup]) / s.steps


def _sig(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.4g}")


def _gib(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def summarise(runs: list[dict]) -> dict:
    """The median run's speed, the highest peak memory, and every run."""
    per_step = statistics.median(r["s_per_step"] for r in runs)
    peaks = [r["peak_rss_training_gib"] for r in runs if r["peak_rss_training_gib"]]
    return {"s_per_step": _sig(per_step), "steps_per_s": _sig(1 / per_step),
            "peak_rss_training_gib": max(peaks) if peaks else None,
            "peak_rss_process_gib": max(r["peak_rss_process_gib"] for r in runs),
            "runs": runs}


def machine_info() -> dict:
    import diffusers
    import torch

    from bench.train import _cpu_name
    from dreamstudio.core.devices import cpu_has_bf16

    return {"cpu": _cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cpu_bf16_units": cpu_has_bf16(), "memory_gib": _gib(_total_memory_gib()),
            "memory_available_at_start_gib": _gib(available_gib()),
            "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "diffusers": diffusers.__version__}


def _total_memory_gib() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        return None


def script_info(script: Path, commit: str | None) -> dict:
    """Which diffusers script ran: its path, digest and commit (given, or a COMMIT file
    beside it, as the benchmark's instructions fetch it)."""
    beside = script.parent / "COMMIT"
    if commit is None and beside.is_file():
        commit = beside.read_text(encoding="utf-8").strip()
    return {"script": str(script), "sha256": hashlib.sha256(script.read_bytes()).hexdigest(),
            "commit": commit or "unknown"}


def run_benchmark(s: Settings, sides: list[str], rounds: int, script: Path | None = None,
                  deps: Path | None = None, min_free_gib: float = 3.0,
                  commit: str | None = None, report=lambda r: None) -> dict:
    """`rounds` runs of each side in turn; `report` gets the results after every run."""
    results: dict = {
        "benchmark": "SDXL DreamBooth LoRA training: ours vs diffusers' "
                     "train_dreambooth_lora_sdxl.py",
        "machine": machine_info(), "model": str(s.model),
        "settings": {**{k: str(v) if isinstance(v, Path) else v
                        for k, v in dataclasses.asdict(s).items()},
                     "batch_size": 1, "rounds": rounds, "sides": sides},
        "method": __doc__.split("How each side is measured", 1)[1].strip(),
    }
    if "theirs" in sides:
        results["diffusers"] = script_info(script, commit)
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    with tempfile.TemporaryDirectory(prefix="bench-sdxl-") as tmp:
        for round_ in range(rounds):
            for side in sides:
                print(f"round {round_ + 1}/{rounds}: {side}", flush=True)
                runs[side].append(run_side(side, s, Path(tmp), script, deps, min_free_gib))
                results[side] = summarise(runs[side])
                print(f"  {json.dumps(runs[side][-1])}", flush=True)
                report(results)
    if "ours" in results and "theirs" in results:
        results["speedup_steps_per_s"] = _sig(
            results["theirs"]["s_per_step"] / results["ours"]["s_per_step"])
    return results


def format_report(r: dict) -> str:
    st = r["settings"]
    head = (f"SDXL LoRA training at {st['resolution']} px, batch 1, rank {st['rank']}, "
            f"{st['precision']}, {st['steps']} timed step(s) after {st['warmup']} warm-up, "
            f"{st['rounds']} round(s):")
    lines = [head]
    for side in SIDES:
        if side in r:
            f = r[side]
            lines.append(f"  {side:7s} {f['s_per_step']:8.3f} s/step  "
                         f"{f['steps_per_s']:.4f} steps/s  "
                         f"peak RSS {f['peak_rss_training_gib']} GiB (training)")
    if "speedup_steps_per_s" in r:
        lines.append(f"  ours / theirs steps/s: x{r['speedup_steps_per_s']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sdxl",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                        help="SDXL-architecture folder (built there if missing).")
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--diffusers-script", type=Path,
                        help="diffusers' examples/dreambooth/train_dreambooth_lora_sdxl.py")
    parser.add_argument("--diffusers-commit", help="The commit the script is from "
                        "(default: a COMMIT file beside it).")
    parser.add_argument("--deps", type=Path, default=Path("/work/scratch/benchdeps"),
                        help="Extra packages their script imports (pip install --target).")
    parser.add_argument("--sides", default="ours,theirs", help="ours, theirs or both.")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--precision", default="bf16", choices=("bf16", "no"))
    parser.add_argument("--steps", type=int, default=4, help="Timed steps per run.")
    parser.add_argument("--warmup", type=int, default=1, help="Untimed steps first (>= 1).")
    parser.add_argument("--rounds", type=int, default=2, help="Runs of each side, alternating.")
    parser.add_argument("--train-text-encoder", action="store_true",
                        help="Both sides also train both text encoders.")
    parser.add_argument("--min-free-gib", type=float, default=3.0,
                        help="Stop a run when the machine has less memory available.")
    parser.add_argument("--json", type=Path, default=Path("bench-sdxl.json"))
    args = parser.parse_args(argv)
    sides = [side for side in args.sides.split(",") if side]
    if not sides or set(sides) - set(SIDES):
        parser.error(f"--sides: a comma list of {', '.join(SIDES)}")
    if "theirs" in sides and not (args.diffusers_script and args.diffusers_script.is_file()):
        parser.error("their side needs --diffusers-script PATH (train_dreambooth_lora_sdxl.py)")
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1: timing starts at a report")
    if not (args.model / "model_index.json").is_file():
        from bench.sdxl_arch import save_sdxl_architecture

        print(f"building SDXL's architecture in {args.model}", flush=True)
        save_sdxl_architecture(args.model)
    settings = Settings(model=args.model, photos=args.photos, resolution=args.resolution,
                        precision=args.precision, steps=args.steps, warmup=args.warmup,
                        train_text_encoder=args.train_text_encoder)

    def write(results: dict) -> None:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")

    results = run_benchmark(settings, sides, args.rounds, args.diffusers_script, args.deps,
                            args.min_free_gib, args.diffusers_commit, report=write)
    write(results)
    print(format_report(results))
    print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
