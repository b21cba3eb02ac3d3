"""The sweep's recommendation: which cell to use, said as one rule, and why.

Subject fidelity alone would pick the cell that copies the photos hardest; the CLIP-T
tolerance keeps the prompt in charge (measured against the base model at the same guidance,
since guidance itself moves CLIP-T), and the leak flag refuses cells whose class has turned
into the subject.
"""

from __future__ import annotations

from .results import CellScore, Recommendation

RULE_TEXT = ("Highest subject fidelity ({fidelity}) among the cells that have one, whose "
             "CLIP-T is at most {tolerance} below the base model's at the same guidance (or at "
             "the nearest guidance the base model was scored at) and whose leak is not "
             "flagged; ties go to the higher CLIP-T, then the lower UNet scale, then "
             "the lower text-encoder scale, then the earlier cell of the sweep.")


def fidelity_name(uses_face: bool) -> str:
    return "face identity" if uses_face else "DINO"


def percent(tolerance: float) -> str:
    return f"{round(tolerance * 100, 2):g}%"


def rule_text(tolerance: float, uses_face: bool) -> str:
    return RULE_TEXT.format(fidelity=fidelity_name(uses_face), tolerance=percent(tolerance))


def pareto_front(cells: list[CellScore], uses_face: bool) -> list[CellScore]:
    """The cells no other cell beats on both subject fidelity and CLIP-T, in sweep order;
    cells missing either score are never on it."""
    scored = [c for c in cells
              if c.subject_fidelity(uses_face) is not None and c.clip_t is not None]

    def dominates(a: CellScore, b: CellScore) -> bool:
        fa, fb = a.subject_fidelity(uses_face), b.subject_fidelity(uses_face)
        return fa >= fb and a.clip_t >= b.clip_t and (fa > fb or a.clip_t > b.clip_t)

    return [c for c in scored if not any(dominates(o, c) for o in scored)]


def base_row(cell: CellScore, base: list[CellScore]) -> tuple[CellScore | None, bool]:
    """The base row a cell is compared with, and whether it is the exact guidance's."""
    exact = next((b for b in base if b.guidance == cell.guidance), None)
    if exact is not None:
        return exact, True
    if not base:
        return None, False
    # min keeps the first of equally near rows, so the choice does not depend on float noise.
    return min(base, key=lambda b: abs(b.guidance - cell.guidance)), False


def clip_t_floor(base_clip_t: float, tolerance: float) -> float:
    """The lowest CLIP-T within `tolerance` (a fraction) of the base model's. Measured from
    its size, so a negative CLIP-T (possible with any cosine) still gets a floor below it."""
    return base_clip_t - tolerance * abs(base_clip_t)


def _threshold(base: CellScore, tolerance: float) -> float:
    return clip_t_floor(base.clip_t, tolerance)


def _f(value: float | None) -> str:
    return "none" if value is None else f"{value:.3f}"


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _no_score_words(cell: CellScore, uses_face: bool) -> str:
    if uses_face and cell.face_found == 0:
        return "no face was found in its images"
    return f"it has no {fidelity_name(uses_face)} score"


def recommend(cells: list[CellScore], base: list[CellScore], tolerance: float,
              uses_face: bool) -> Recommendation:
    rule = rule_text(tolerance, uses_face)
    pareto = [c.key for c in pareto_front(cells, uses_face)]
    if not cells:
        return Recommendation(None, rule, "The sweep scored no LoRA cells.", pareto)
    usable_base = [b for b in base if b.clip_t is not None]
    if not usable_base:
        return Recommendation(
            None, rule, "The base model has no CLIP-T score at any guidance, so no cell can "
            "be checked against it: run the sweep again with the base-model rows.", pareto)

    below: list[tuple[CellScore, CellScore]] = []  # (cell, its base row)
    no_clip_t: list[CellScore] = []
    leaking: list[CellScore] = []
    unscored: list[CellScore] = []
    passing: list[tuple[int, CellScore, CellScore]] = []
    nearest: dict[float, float] = {}  # a cell's guidance -> the base guidance it used
    for index, cell in enumerate(cells):
        ref, exact = base_row(cell, usable_base)
        if not exact:
            nearest[cell.guidance] = ref.guidance
        if cell.clip_t is None:
            no_clip_t.append(cell)
        elif cell.clip_t < _threshold(ref, tolerance):
            below.append((cell, ref))
        elif cell.leak_flagged:
            leaking.append(cell)
        elif cell.subject_fidelity(uses_face) is None:
            unscored.append(cell)
        else:
            passing.append((index, cell, ref))

    note = _nearest_note(nearest)
    if not passing:
        reason = _why_none(len(cells), below, no_clip_t, leaking, unscored, tolerance,
                           uses_face)
        return Recommendation(None, rule, reason + note, pareto)

    _, cell, ref = min(passing, key=lambda p: (
        -p[1].subject_fidelity(uses_face), -p[1].clip_t, p[1].unet_scale,
        p[1].text_encoder_scale, p[0]))
    skipped = _skipped(below, no_clip_t, leaking, unscored, uses_face)
    reason = _why_pick(cell, ref, len(passing), skipped, tolerance, uses_face)
    return Recommendation(cell, rule, reason + note, pareto)


def _below_words(below: list[tuple[CellScore, CellScore]]) -> str:
    # The cell nearest to passing: its CLIP-T as the largest share of its base row's.
    cell, ref = max(below, key=lambda p: p[0].clip_t / p[1].clip_t if p[1].clip_t else 0.0)
    return f"(best {_f(cell.clip_t)} vs base {_f(ref.clip_t)} at guidance {ref.guidance:g})"


def _why_none(total: int, below, no_clip_t, leaking, unscored, tolerance: float,
              uses_face: bool) -> str:
    pct, name = percent(tolerance), fidelity_name(uses_face)
    if len(below) == total:
        return (f"No cell keeps CLIP-T within {pct} of the base model's "
                f"{_below_words(below)}: lower the UNet scale, or widen the "
                "tolerance.")
    if len(leaking) == total:
        return ("Every cell leaks: its class-prompt images (no identifier) look like the "
                "subject more than the base model's do, by over the leak margin: try a lower "
                "UNet scale or an earlier checkpoint, or train with prior preservation.")
    if len(unscored) == total:
        if uses_face and all(c.face_found == 0 for c in unscored):
            return ("No face was found in any image of any cell, so face identity cannot rank "
                    "them: check that the prompts and the LoRA draw a face, or turn face "
                    "identity off.")
        return f"No cell has a {name} score, so none can be ranked."
    if len(no_clip_t) == total:
        return "No cell has a CLIP-T score, so none can be checked against the base model."
    parts = []
    if below:
        parts.append(f"{_plural(len(below), 'cell falls', 'cells fall')} more than {pct} "
                     f"below the base model's CLIP-T {_below_words(below)}")
    if no_clip_t:
        parts.append(f"{len(no_clip_t)} {'has' if len(no_clip_t) == 1 else 'have'} no CLIP-T "
                     "score")
    if leaking:
        rest = "of the rest " if below else ""
        parts.append(f"{len(leaking)} {rest}{'leaks' if len(leaking) == 1 else 'leak'} "
                     "(class-prompt images look like the subject)")
    if unscored:
        faceless = uses_face and all(c.face_found == 0 for c in unscored)
        what = (f"no face found in {'its' if len(unscored) == 1 else 'their'} images"
                if faceless else f"no {name} score")
        parts.append(f"{len(unscored)} {'has' if len(unscored) == 1 else 'have'} {what}")
    within = total - len(below) - len(no_clip_t)
    lead = "No cell passes the rule"
    if below and not no_clip_t and len(leaking) == within:
        lead = "Every cell within the tolerance leaks"
    return f"{lead}: " + _join(parts) + "."


def _join(parts: list[str]) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _skipped(below, no_clip_t, leaking, unscored, uses_face: bool) -> list[str]:
    skipped = []
    if below:
        skipped.append(f"{len(below)} below the CLIP-T tolerance")
    if no_clip_t:
        skipped.append(f"{len(no_clip_t)} without a CLIP-T score")
    if leaking:
        skipped.append(f"{len(leaking)} leaking")
    if unscored:
        skipped.append(f"{len(unscored)} without a {fidelity_name(uses_face)} score")
    return skipped


def _why_pick(cell: CellScore, ref: CellScore, n_passing: int, skipped: list[str],
              tolerance: float, uses_face: bool) -> str:
    name = fidelity_name(uses_face)
    mine, theirs = cell.subject_fidelity(uses_face), ref.subject_fidelity(uses_face)
    text = (f"{cell.label}: {name} {_f(mine)} vs the base model's {_f(theirs)}, CLIP-T "
            f"{_f(cell.clip_t)} vs {_f(ref.clip_t)} (within {percent(tolerance)}) at guidance "
            f"{ref.guidance:g}")
    if cell.leak is not None:
        text += f", leak {_f(cell.leak)}"
        text += f" vs {_f(ref.leak)}" if ref.leak is not None else ""
    text += (f"; the highest {name} of the {n_passing} cells that pass" if n_passing > 1
             else "; the only cell that passes")
    if skipped:
        text += " (skipped: " + ", ".join(skipped) + ")"
    text += "."
    if theirs is None or mine <= theirs:
        text += (f" The LoRA does not beat the base model's own {name} here "
                 f"({_f(mine)} vs {_f(theirs)}), so it adds little of the subject at these "
                 "settings: train longer, or check the photos.")
    return text


def _nearest_note(nearest: dict[float, float]) -> str:
    if not nearest:
        return ""
    missing = ", ".join(f"{g:g}" for g in sorted(nearest))
    pairs = ", ".join(f"guidance {g:g} with the base model at {b:g}"
                      for g, b in sorted(nearest.items()))
    return (f" The base model has no CLIP-T score at guidance {missing}, so those cells were "
            f"compared with it at the nearest guidance: {pairs}.")
