"""An evaluation's results: per-prompt scores, their means, and how they are written.

fidelity.json keeps everything (config, rows, means, the user's photos against each other,
the paper's rows); fidelity.csv the rows a spreadsheet wants; format_table the terminal's.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from dataclasses import dataclass, field
from pathlib import Path

from ..core.files import atomic_write_json, atomic_write_text
from .metrics import PAPER_REFERENCE, ReferenceRow

JSON_NAME = "fidelity.json"
CSV_NAME = "fidelity.csv"
METRICS = ("dino", "clip_i", "clip_t")


@dataclass
class PromptRow:
    prompt: str  # what was generated, with the identifier
    clip_t_prompt: str  # what CLIP-T compared with: the prompt without the identifier
    dino: float
    clip_i: float
    clip_t: float
    images: list[str] = field(default_factory=list)  # relative to the output folder


@dataclass
class EvalReport:
    config: dict
    model: str
    rows: list[PromptRow] = field(default_factory=list)
    real_images: list[str] = field(default_factory=list)
    skipped_real_images: list[tuple[str, str]] = field(default_factory=list)
    # The user's photos compared with each other: this subject's ceiling, like the paper's
    # "Real images" row. None where there is only one photo.
    real_photos: dict[str, float | None] = field(default_factory=dict)
    # Which real photos subject fidelity was measured against: "held_out" (photos marked
    # for scoring only, never trained on: the honest measure) or "training".
    compared_with: str = "training"
    reference: tuple[ReferenceRow, ...] = PAPER_REFERENCE
    # How each scorer prepared its images ({"dino": ..., "clip": ...}), so a reader can tell
    # whether the numbers are comparable with the paper's.
    preprocessing: dict[str, str] = field(default_factory=dict)
    status: str = "completed"  # or "cancelled" (rows then hold the prompts finished)
    seconds: float = 0.0

    @property
    def means(self) -> dict[str, float | None]:
        """Each metric averaged over the prompt rows (every prompt has as many images, so
        this is also the mean over all generated images, as in the paper)."""
        if not self.rows:
            return {m: None for m in METRICS}
        return {m: sum(getattr(r, m) for r in self.rows) / len(self.rows) for m in METRICS}

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "model": self.model,
            "lora_dir": self.config.get("lora_dir"),
            "identifier": self.config.get("identifier"),
            "class_noun": self.config.get("class_noun"),
            "kind": self.config.get("kind"),
            "dino_model": self.config.get("dino_model"),
            "clip_model": self.config.get("clip_model"),
            "preprocessing": self.preprocessing,
            "config": self.config,
            "rows": [dataclasses.asdict(r) for r in self.rows],
            "means": self.means,
            "real_photos": self.real_photos,
            "reference": [dataclasses.asdict(r) for r in self.reference],
            "real_images": self.real_images,
            "compared_with": self.compared_with,
            "skipped_real_images": [list(s) for s in self.skipped_real_images],
            "seconds": round(self.seconds, 2),
        }

    def to_csv(self) -> str:
        """Prompt rows, then the mean row, then the paper's rows (n/a left empty)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["row", "prompt", "clip_t_prompt", "dino", "clip_i", "clip_t", "images"])

        def number(value):
            return "" if value is None else f"{value:.6f}"

        for r in self.rows:
            writer.writerow(["prompt", r.prompt, r.clip_t_prompt, number(r.dino),
                             number(r.clip_i), number(r.clip_t), ";".join(r.images)])
        means = self.means
        writer.writerow(["mean", f"mean of {len(self.rows)} prompts", "",
                         *(number(means[m]) for m in METRICS), ""])
        for ref in self.reference:
            writer.writerow(["reference", ref.name, "", number(ref.dino), number(ref.clip_i),
                             number(ref.clip_t), ""])
        return buffer.getvalue()

    def write(self, output_dir: Path) -> tuple[Path, Path]:
        """Write fidelity.json and fidelity.csv, each atomically; return their paths."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        json_path, csv_path = output_dir / JSON_NAME, output_dir / CSV_NAME
        atomic_write_json(json_path, self.to_dict())
        atomic_write_text(csv_path, self.to_csv())
        return json_path, csv_path


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def compared_with_sentence(report: EvalReport) -> str:
    n = len(report.real_images)
    if report.compared_with == "held_out":
        return (f"Subject fidelity is measured against the {n} photo(s) kept for scoring only, "
                "which training never saw.")
    return (f"Subject fidelity is measured against the {n} training photo(s) (none was kept "
            "for scoring only), so it rewards copying them.")


def format_table(report: EvalReport, width: int = 56) -> str:
    """Plain-text table: one line per prompt, the mean, this subject's photos, the paper."""

    def cells(label: str, values: list[str]) -> str:
        label = label if len(label) <= width else label[: width - 3] + "..."
        return f"{label:<{width}}" + "".join(f"  {v:>6}" for v in values)

    def line(label: str, dino, clip_i, clip_t) -> str:
        return cells(label, [_score(dino), _score(clip_i), _score(clip_t)])

    header = cells("Prompt", ["DINO", "CLIP-I", "CLIP-T"])
    rule = "-" * len(header)
    lines = [header, rule]
    for r in report.rows:
        lines.append(line(r.prompt, r.dino, r.clip_i, r.clip_t))
    means = report.means
    lines += [rule, line(f"Mean of {len(report.rows)} prompts", means["dino"],
                         means["clip_i"], means["clip_t"])]
    if report.real_photos.get("dino") is not None:
        lines.append(line("Your photos, each vs the others", report.real_photos["dino"],
                          report.real_photos["clip_i"], None))
    lines.append(rule)
    lines.append(compared_with_sentence(report))
    lines += [line(ref.name, ref.dino, ref.clip_i, ref.clip_t) for ref in report.reference]
    if report.status != "completed":
        lines.append(f"(cancelled: {len(report.rows)} prompts scored)")
    return "\n".join(lines)
