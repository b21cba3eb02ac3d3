"""The grid picture: cells edge to edge under their column values, beside their row values."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _text_width(draw: ImageDraw.ImageDraw, text: str, font) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return right - left


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    """Break `text` at spaces so each line fits `width` (a lone long word stays whole)."""
    lines: list[str] = []
    for word in text.split():
        if lines and _text_width(draw, f"{lines[-1]} {word}", font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def draw_grid(cells: list[list[Image.Image | None]], x_title: str, x_labels: list[str],
              y_title: str | None = None, y_labels: list[str] | None = None,
              cell_size: tuple[int, int] = (64, 64)) -> Image.Image:
    """Lay `cells` (rows of images, all one size) out with the axis values written on it.

    Top band: the X title, then each column's value; left band: each row's value, with the
    Y title above it. Cells sit edge to edge; a None cell is left grey (`cell_size` is
    only used when there is no image at all).
    """
    rows, cols = len(cells), len(cells[0])
    sample = next((im for row in cells for im in row if im is not None), None)
    cw, ch = sample.size if sample is not None else cell_size
    font_size = max(11, min(28, cw // 12))
    font, title_font = _font(font_size), _font(font_size + 2)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    pad = max(3, font_size // 2)
    line_h = font_size + 3
    x_lines = [_wrap(probe, label, font, cw - pad) for label in x_labels]
    header_h = pad + (font_size + 5) + pad + max(len(ls) for ls in x_lines) * line_h + pad
    left_w, y_title_lines = 0, []
    if y_labels:
        # The row title wraps rather than widen the band beyond a label or a cell.
        widest = max(_text_width(probe, label, font) for label in y_labels)
        y_title_lines = _wrap(probe, y_title or "", title_font, max(widest, cw))
        widths = [widest] + [_text_width(probe, line, title_font) for line in y_title_lines]
        left_w = max(widths) + 2 * pad
        header_h = max(header_h, 2 * pad + len(y_title_lines) * (line_h + 2))

    canvas = Image.new("RGB", (left_w + cols * cw, header_h + rows * ch), "white")
    draw = ImageDraw.Draw(canvas)
    title_w = _text_width(draw, x_title, title_font)
    draw.text((left_w + max(0, (cols * cw - title_w) // 2), pad), x_title, fill="black",
              font=title_font)
    top = pad + font_size + 5 + pad
    for col, lines in enumerate(x_lines):
        for n, line in enumerate(lines):
            x = left_w + col * cw + (cw - _text_width(draw, line, font)) // 2
            draw.text((x, top + n * line_h), line, fill="black", font=font)
    if y_labels:
        for n, line in enumerate(reversed(y_title_lines)):  # bottom-aligned over the labels
            draw.text((pad, header_h - pad - (n + 1) * (line_h + 2)), line, fill="black",
                      font=title_font)
        for row, label in enumerate(y_labels):
            y = header_h + row * ch + (ch - line_h) // 2
            draw.text((pad, y), label, fill="black", font=font)
    for row in range(rows):
        for col in range(cols):
            box = (left_w + col * cw, header_h + row * ch)
            image = cells[row][col]
            if image is None:
                draw.rectangle((*box, box[0] + cw - 1, box[1] + ch - 1), fill=(220, 220, 220))
            else:
                canvas.paste(image.convert("RGB"), box)
    return canvas
