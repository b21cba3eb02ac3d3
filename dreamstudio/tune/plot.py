"""The sweep's scatter plot, drawn with PIL: subject fidelity against CLIP-T, one dot per
cell, the base model's rows, the Pareto cells, the pick and the CLIP-T tolerance line.

PIL rather than matplotlib: the plot is simple and matplotlib is not a dependency.
"""

from __future__ import annotations

import math

from PIL import Image, ImageDraw, ImageFont

from .results import CellScore, SweepResult
from .rule import clip_t_floor, fidelity_name

# Distinct, colour-blind-friendly dot colours (Okabe-Ito), one per candidate, in order.
PALETTE = ((0, 114, 178), (230, 159, 0), (0, 158, 115), (204, 121, 167), (86, 180, 233),
           (213, 94, 0), (240, 228, 66), (120, 120, 120))
BACKGROUND = (255, 255, 255)
INK = (40, 40, 40)
GRID = (228, 228, 228)
BASE_COLOUR = (0, 0, 0)
PICK_COLOUR = (200, 0, 0)
LINE_COLOUR = (150, 150, 150)
DEFAULT_TOLERANCE = 0.05
LEGEND_LABELS = ("base model", "best trade-off", "recommended", "lowest CLIP-T allowed")


def candidate_colours(result: SweepResult) -> dict[str, tuple[int, int, int]]:
    names = list(dict.fromkeys(c.candidate for c in result.cells))
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def tolerance_line(result: SweepResult) -> float | None:
    """The lowest CLIP-T the rule accepts at the first guidance, or None without its base
    row."""
    guidances = result.config.get("guidances") or [b.guidance for b in result.base]
    row = (result.base_for(guidances[0]) if guidances else None) or next(
        iter(result.base), None)
    if row is None or row.clip_t is None:
        return None
    tolerance = result.config.get("clip_t_tolerance", DEFAULT_TOLERANCE)
    return clip_t_floor(row.clip_t, tolerance)


def _points(cells: list[CellScore], uses_face: bool) -> list[tuple[CellScore, float, float]]:
    out = []
    for cell in cells:
        y = cell.subject_fidelity(uses_face)
        if y is not None and cell.clip_t is not None:
            out.append((cell, cell.clip_t, y))
    return out


def _span(values: list[float]) -> tuple[float, float]:
    """A range around the values with a margin; a flat or empty set still gets a width."""
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    pad = (high - low) * 0.08
    if pad == 0:
        pad = max(abs(low) * 0.05, 0.01)
    return low - pad, high + pad


def _ticks(low: float, high: float, count: int = 6) -> list[float]:
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(low / step) * step
    n = math.floor((high - first) / step + 1e-9) + 1
    return [first + i * step for i in range(max(n, 0))]


def _tick_label(value: float, ticks: list[float]) -> str:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 0.01
    # As many decimals as the step needs (0.025 -> 3), so neighbouring labels differ.
    decimals = next((d for d in range(6) if abs(round(step, d) - step) <= step * 1e-6), 6)
    return f"{value:.{decimals}f}"


def draw_scatter(result: SweepResult, size: tuple[int, int] = (720, 480)) -> Image.Image:
    width, height = size
    scale = min(width / 720, height / 480)
    font = ImageFont.load_default(size=max(8, round(12 * scale)))
    small = ImageFont.load_default(size=max(7, round(11 * scale)))
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)

    cells = _points(result.cells, result.uses_face)
    bases = _points(result.base, result.uses_face)
    limit = tolerance_line(result)
    xs = [x for _, x, _ in cells + bases] + ([limit] if limit is not None else [])
    x0, x1 = _span(xs)
    y0, y1 = _span([y for _, _, y in cells + bases])

    colours = candidate_colours(result)
    r = max(3, round(5 * scale))
    labels = [*colours, *LEGEND_LABELS]
    legend_width = max(draw.textlength(t, font=small) for t in labels) + 2 * r + 26 * scale
    left, right = round(64 * scale), round(width - legend_width)
    top, bottom = round(30 * scale), round(height - 52 * scale)

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (right - left)

    def py(y: float) -> float:
        return bottom - (y - y0) / (y1 - y0) * (bottom - top)

    xticks, yticks = _ticks(x0, x1), _ticks(y0, y1)
    for t in xticks:
        draw.line([(px(t), top), (px(t), bottom)], fill=GRID)
        draw.text((px(t), bottom + 4 * scale), _tick_label(t, xticks), fill=INK, font=small,
                  anchor="mt")
    for t in yticks:
        draw.line([(left, py(t)), (right, py(t))], fill=GRID)
        draw.text((left - 5 * scale, py(t)), _tick_label(t, yticks), fill=INK, font=small,
                  anchor="rm")
    draw.rectangle([left, top, right, bottom], outline=INK)
    draw.text(((left + right) / 2, height - 6 * scale), "CLIP-T (prompt fidelity)", fill=INK,
              font=font, anchor="md")
    y_title = ("face identity" if result.uses_face else "DINO") + " (subject fidelity)"
    _vertical_text(image, y_title, (round(4 * scale), (top + bottom) / 2), font)
    draw.text((left, top - 6 * scale), f"Sweep: {fidelity_name(result.uses_face)} vs CLIP-T",
              fill=INK, font=font, anchor="ld")

    if limit is not None:
        _dashed_vline(draw, px(limit), top, bottom, LINE_COLOUR, round(6 * scale))
    if not cells and not bases:
        draw.text(((left + right) / 2, (top + bottom) / 2), "no scores to plot", fill=INK,
                  font=font, anchor="mm")

    front = set(result.recommendation.pareto) if result.recommendation else set()
    pick = result.recommendation.cell if result.recommendation else None
    for cell, x, y in cells:
        cx, cy = px(x), py(y)
        outline = INK if cell.key in front else None
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colours[cell.candidate],
                     outline=outline, width=max(1, round(2 * scale)))
    several = len(bases) > 1
    for row, x, y in bases:
        _diamond(draw, px(x), py(y), r + 1, BASE_COLOUR)
        if several:  # which guidance each base row is, since they look alike
            draw.text((px(x) + r + 3, py(y)), f"g {row.guidance:g}", fill=INK, font=small,
                      anchor="lm")
    if pick is not None and pick.clip_t is not None and \
            pick.subject_fidelity(result.uses_face) is not None:
        cx, cy = px(pick.clip_t), py(pick.subject_fidelity(result.uses_face))
        ring = r * 2 + 1
        draw.ellipse([cx - ring, cy - ring, cx + ring, cy + ring], outline=PICK_COLOUR,
                     width=max(2, round(2 * scale)))
        half = draw.textlength("recommended", font=small) / 2
        tx = min(max(cx, left + half + 2), right - half - 2)  # kept inside the axes
        # Near the top, above the ring would sit under the page's label of the image.
        above = cy - ring - 2 - 2 * getattr(small, "size", 11) >= top
        draw.text((tx, cy - ring - 2 if above else cy + ring + 2), "recommended",
                  fill=PICK_COLOUR, font=small, anchor="mb" if above else "mt")

    _legend(draw, colours, (right + 14 * scale, top), r, scale, small, limit is not None)
    return image


def _legend(draw, colours, origin, r, scale, font, has_line: bool) -> None:
    x, y = origin
    step = 18 * scale
    for name, colour in colours.items():
        draw.ellipse([x, y + step / 2 - r, x + 2 * r, y + step / 2 + r], fill=colour)
        draw.text((x + 2 * r + 6 * scale, y + step / 2), name, fill=INK, font=font, anchor="lm")
        y += step
    _diamond(draw, x + r, y + step / 2, r + 1, BASE_COLOUR)
    draw.text((x + 2 * r + 6 * scale, y + step / 2), LEGEND_LABELS[0], fill=INK, font=font,
              anchor="lm")
    y += step
    draw.ellipse([x, y + step / 2 - r, x + 2 * r, y + step / 2 + r], outline=INK,
                 width=max(1, round(2 * scale)))
    draw.text((x + 2 * r + 6 * scale, y + step / 2), LEGEND_LABELS[1], fill=INK, font=font,
              anchor="lm")
    y += step
    draw.ellipse([x - 1, y + step / 2 - r - 1, x + 2 * r + 1, y + step / 2 + r + 1],
                 outline=PICK_COLOUR, width=2)
    draw.text((x + 2 * r + 6 * scale, y + step / 2), LEGEND_LABELS[2], fill=INK, font=font,
              anchor="lm")
    if has_line:
        y += step
        _dashed_vline(draw, x + r, y + 2, y + step - 2, LINE_COLOUR, round(4 * scale))
        draw.text((x + 2 * r + 6 * scale, y + step / 2), LEGEND_LABELS[3], fill=INK,
                  font=font, anchor="lm")


def _diamond(draw, cx: float, cy: float, r: float, colour) -> None:
    draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour)


def _dashed_vline(draw, x: float, top: float, bottom: float, colour, dash: int) -> None:
    dash = max(2, dash)
    y = top
    while y < bottom:
        draw.line([(x, y), (x, min(y + dash, bottom))], fill=colour, width=2)
        y += 2 * dash


def _vertical_text(image: Image.Image, text: str, at: tuple[float, float], font) -> None:
    """Text turned a quarter left, its top edge at x = at[0], centred on y = at[1]."""
    box = font.getbbox(text)
    label = Image.new("RGB", (box[2] - box[0] + 2, box[3] - box[1] + 2), BACKGROUND)
    ImageDraw.Draw(label).text((1 - box[0], 1 - box[1]), text, fill=INK, font=font)
    label = label.rotate(90, expand=True)
    image.paste(label, (round(at[0]), round(at[1] - label.height / 2)))
