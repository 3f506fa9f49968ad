"""PNG plots drawn with PIL alone: predicted-vs-true scatter plots and training curves.

kdfiqa draws its few figures itself so that plotting adds no dependency. Every plot has a title,
a framed data area with tick marks and tick labels on both axes, and axis labels:

* :func:`scatter_plot`: one model's predicted scores against the true scores, with the identity
  line y = x (a perfect model puts every point on it), the split they were scored on under the title
  and a collapsed model marked;
* :func:`curves_plot`: the validation score per epoch and the mean training loss per epoch of one
  or more training runs (read from the records the :class:`~kdfiqa.engine.Trainer` returns and
  writes to ``log.jsonl``), one coloured line per run, each panel naming its split, with one legend
  for the whole figure;
* :func:`pareto_plot`: the candidates of an architecture search, cost against capacity, with their
  Pareto front joined by a line, a reference model and the budget's limits.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .atomic_write import atomic_open

__all__ = ["scatter_plot", "curves_plot", "pareto_plot", "nice_ticks", "PALETTE"]

PALETTE = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207))
"""Line and point colours, in the order runs are given."""

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
GRID = (225, 225, 225)
ALERT = (200, 0, 0)
"""The colour of a warning drawn on a plot (a collapsed model)."""
MARGIN = {"left": 64, "right": 16, "top": 48, "bottom": 48}
"""Pixels around a panel's data area: room for the title, tick labels and axis labels."""


def nice_ticks(low: float, high: float, count: int = 5, *, min_step: float = 0.0) -> list[float]:
    """About ``count`` round tick values (steps of 1, 2 or 5 times a power of ten, at least
    ``min_step``) covering [``low``, ``high``]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"tick range [{low}, {high}] is not finite")
    if high <= low:
        high = low + 1.0
    raw = max((high - low) / max(count, 1), min_step)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1.0, 2.0, 5.0, 10.0) if m * power >= raw)
    first = math.floor(low / step + 1e-9) * step
    last = math.ceil(high / step - 1e-9) * step
    return [round(first + k * step, 12) for k in range(int(round((last - first) / step)) + 1)]


def _label(value: float) -> str:
    return f"{value:.3g}"


@dataclass
class _Panel:
    """A data area inside an image: maps data coordinates to pixels and draws the frame around it."""

    draw: ImageDraw.ImageDraw
    box: tuple[int, int, int, int]  # left, top, right, bottom of the whole panel, margins included
    x_ticks: Sequence[float]
    y_ticks: Sequence[float]
    font: Any

    @property
    def area(self) -> tuple[int, int, int, int]:
        left, top, right, bottom = self.box
        return (left + MARGIN["left"], top + MARGIN["top"], right - MARGIN["right"], bottom - MARGIN["bottom"])

    def to_pixel(self, x: float, y: float) -> tuple[float, float]:
        x0, y0, x1, y1 = self.area
        (xa, xb), (ya, yb) = (self.x_ticks[0], self.x_ticks[-1]), (self.y_ticks[0], self.y_ticks[-1])
        return x0 + (x - xa) / (xb - xa) * (x1 - x0), y1 - (y - ya) / (yb - ya) * (y1 - y0)

    def _text(self, xy: tuple[float, float], text: str, anchor: str) -> None:
        self.draw.text(xy, text, fill=INK, font=self.font, anchor=anchor)

    def frame(self, title: str, x_label: str, y_label: str, subtitle: str | None = None) -> None:
        """Grid, frame, tick marks with their labels, axis labels, the title and the ``subtitle``
        line under it."""
        x0, y0, x1, y1 = self.area
        for x in self.x_ticks:
            px, _ = self.to_pixel(x, self.y_ticks[0])
            self.draw.line((px, y0, px, y1), fill=GRID)
            self.draw.line((px, y1, px, y1 + 5), fill=INK)
            self._text((px, y1 + 8), _label(x), "mt")
        for y in self.y_ticks:
            _, py = self.to_pixel(self.x_ticks[0], y)
            self.draw.line((x0, py, x1, py), fill=GRID)
            self.draw.line((x0 - 5, py, x0, py), fill=INK)
            self._text((x0 - 8, py), _label(y), "rm")
        self.draw.rectangle((x0, y0, x1, y1), outline=INK)
        self._text(((x0 + x1) / 2, self.box[1] + (12 if subtitle else MARGIN["top"] / 2)), title, "mm")
        if subtitle:
            self._text(((x0 + x1) / 2, self.box[1] + 27), subtitle, "mm")
        self._text(((x0 + x1) / 2, self.box[3] - 10), x_label, "mb")
        self._text((self.box[0] + 6, y0 - 6), y_label, "lb")

    def polyline(self, xs: Sequence[float], ys: Sequence[float], colour: tuple[int, int, int], width: int = 2) -> None:
        points = [self.to_pixel(x, y) for x, y in zip(xs, ys) if math.isfinite(x) and math.isfinite(y)]
        if len(points) > 1:
            self.draw.line(points, fill=colour, width=width)
        for px, py in points:
            self.draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=colour)

    def legend(self, names: Sequence[str], colours: Sequence[tuple[int, int, int]],
               origin: tuple[float, float] | None = None) -> None:
        """A key of ``names`` in their ``colours``, from ``origin`` (default: inside the plot area's
        top-left corner); :data:`LEGEND_ROW` pixels a row."""
        x0, y0 = origin if origin is not None else (self.area[0], self.area[1])
        for k, (name, colour) in enumerate(zip(names, colours)):
            y = y0 + 10 + LEGEND_ROW * k
            self.draw.line((x0 + 8, y, x0 + 28, y), fill=colour, width=3)
            self._text((x0 + 34, y), name, "lm")


LEGEND_ROW = 16
"""Height of one legend row, in pixels."""


def _font() -> Any:
    return ImageFont.load_default()


def _finite_range(values: np.ndarray, fallback: tuple[float, float]) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return fallback
    return float(finite.min()), float(finite.max())


def scatter_plot(
    pred: Sequence[float] | np.ndarray,
    true: Sequence[float] | np.ndarray,
    path: str | os.PathLike[str],
    *,
    title: str,
    split: str | None = None,
    note: str | None = None,
    collapsed: bool = False,
    size: int = 480,
) -> Path:
    """Write a ``size`` x ``size`` PNG of ``pred`` (y axis) against ``true`` (x axis) with the
    identity line y = x; both axes span the same range, [0, 1] unless a value lies outside it.

    Under the ``title`` a line names the ``split`` the scores are of (e.g. ``"test split, 256
    images"``) and a ``note`` (e.g. the SRCC); a ``collapsed`` model (near-constant predictions) is
    said so in the plot, in red."""
    p, t = np.asarray(pred, dtype=np.float64).reshape(-1), np.asarray(true, dtype=np.float64).reshape(-1)
    if p.shape != t.shape:
        raise ValueError(f"scatter_plot: {p.size} predictions but {t.size} true scores")
    low, high = _finite_range(np.concatenate([p, t, [0.0, 1.0]]), (0.0, 1.0))
    ticks = nice_ticks(low, high)
    img = Image.new("RGB", (size, size), BACKGROUND)
    panel = _Panel(ImageDraw.Draw(img), (0, 0, size, size), ticks, ticks, _font())
    subtitle = ": ".join(part for part in (split, note) if part)
    panel.frame(title, "true score", "predicted score", subtitle or None)
    start, end = panel.to_pixel(ticks[0], ticks[0]), panel.to_pixel(ticks[-1], ticks[-1])
    panel.draw.line((*start, *end), fill=(120, 120, 120), width=1)
    colour = PALETTE[0]
    for x, y in zip(t, p):
        if math.isfinite(x) and math.isfinite(y):
            px, py = panel.to_pixel(x, y)
            panel.draw.ellipse((px - 2.5, py - 2.5, px + 2.5, py + 2.5), outline=colour, fill=colour)
    panel.legend(["identity y = x"], [(120, 120, 120)])
    if collapsed:
        x0, y0, x1, y1 = panel.area
        panel.draw.text((x1 - 6, y1 - 6), "COLLAPSED: near-constant predictions,\nits figures are not a result",
                        fill=ALERT, font=panel.font, anchor="rd", align="right")
    return _save(img, path)


def _series(history: Sequence[Mapping[str, Any]], *keys: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for record in history:
        value: Any = record
        for key in keys:
            value = value.get(key) if isinstance(value, Mapping) else None
        if isinstance(value, (int, float)):
            xs.append(float(record["epoch"]))
            ys.append(float(value))
    return xs, ys


def curves_plot(
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | os.PathLike[str],
    *,
    title: str = "training curves",
    metric: str = "score",
    splits: tuple[str, str] = ("validation split", "training split"),
    panel_size: tuple[int, int] = (480, 360),
) -> Path:
    """Write a two-panel PNG for ``runs`` ({run name: per-epoch records}): validation ``metric``
    (``record["val"][metric]``) per epoch on the left, mean training loss (``record["train"]["loss"]``)
    per epoch on the right, each panel's title naming its split (``splits``), one colour per run
    and one legend for both panels below them."""
    if not runs:
        raise ValueError("curves_plot: no runs to draw")
    width, height = panel_size
    names, columns = list(runs), 2
    rows = -(-len(runs) // columns)
    key_top = height + 24 + 8
    img = Image.new("RGB", (2 * width, key_top + 22 + LEGEND_ROW * rows + 8), BACKGROUND)
    draw, font = ImageDraw.Draw(img), _font()
    draw.text((width, 12), title, fill=INK, font=font, anchor="mm")
    colours = [PALETTE[k % len(PALETTE)] for k in range(len(runs))]
    panels = ((("val", metric), f"validation {metric}"), (("train", "loss"), "training loss"))
    for column, ((keys, label), split) in enumerate(zip(panels, splits)):
        series = [_series(history, *keys) for history in runs.values()]
        xs = np.array([x for s in series for x in s[0]] or [1.0])
        ys = np.array([y for s in series for y in s[1]] or [0.0])
        x_ticks = nice_ticks(1.0, max(float(xs.max()), 2.0), 6, min_step=1.0)
        y_ticks = nice_ticks(*_finite_range(ys, (0.0, 1.0)))
        panel = _Panel(draw, (column * width, 24, (column + 1) * width, height + 24), x_ticks, y_ticks, font)
        panel.frame(f"{label} per epoch", "epoch", label, f"on the {split}")
        for (run_x, run_y), colour in zip(series, colours):
            panel.polyline(run_x, run_y, colour)
    # one key for the whole figure: framed across both panels, read row by row
    left, right = MARGIN["left"], 2 * width - MARGIN["right"]
    draw.rectangle((left, key_top, right, img.height - 4), outline=GRID)
    draw.text((left + 8, key_top + 6), "runs (the same colour in both panels):", fill=INK, font=font, anchor="la")
    step = (right - left) // columns
    for column in range(columns):
        panel.legend(names[column::columns], colours[column::columns], origin=(left + column * step, key_top + 16))
    return _save(img, path)


def pareto_plot(
    points: Sequence[tuple[float, float]],
    front: Sequence[tuple[float, float]],
    path: str | os.PathLike[str],
    *,
    title: str,
    x_label: str = "GFLOPs",
    y_label: str = "parameters (M)",
    reference: tuple[str, float, float] | None = None,
    limits: tuple[float, float] | None = None,
    size: tuple[int, int] = (560, 420),
    overwrite: bool = True,
) -> Path:
    """Write a PNG of search candidates: ``points`` (x, y) as hollow grey circles, the ``front``
    points filled and joined in x order, ``reference`` (label, x, y) as a square, and ``limits``
    (x limit, y limit) as lines; the axes start at 0 and reach past every point and limit. Without
    ``overwrite`` an existing ``path`` is refused (:class:`~kdfiqa.atomic_write.OutputExistsError`)."""
    xs = np.array([x for x, _ in (*points, *front)] + ([reference[1]] if reference else []) + [0.0], dtype=float)
    ys = np.array([y for _, y in (*points, *front)] + ([reference[2]] if reference else []) + [0.0], dtype=float)
    if limits is not None:
        xs, ys = np.append(xs, limits[0]), np.append(ys, limits[1])
    xs, ys = np.append(xs, 1.05 * np.nanmax(xs)), np.append(ys, 1.05 * np.nanmax(ys))  # lines clear of the frame
    width, height = size
    img = Image.new("RGB", size, BACKGROUND)
    panel = _Panel(ImageDraw.Draw(img), (0, 0, width, height), nice_ticks(*_finite_range(xs, (0.0, 1.0))),
                   nice_ticks(*_finite_range(ys, (0.0, 1.0))), _font())
    panel.frame(title, x_label, y_label)
    names, colours = ["candidates", "Pareto front"], [(150, 150, 150), PALETTE[1]]
    if limits is not None:
        x0, y0, x1, y1 = panel.area
        limit_x, limit_y = panel.to_pixel(*limits)
        panel.draw.line((limit_x, y0, limit_x, y1), fill=PALETTE[4], width=1)
        panel.draw.line((x0, limit_y, x1, limit_y), fill=PALETTE[4], width=1)
        names.append("budget limits")
        colours.append(PALETTE[4])
    for x, y in points:
        px, py = panel.to_pixel(x, y)
        panel.draw.ellipse((px - 3, py - 3, px + 3, py + 3), outline=colours[0])
    ordered = sorted(front)
    panel.polyline([x for x, _ in ordered], [y for _, y in ordered], PALETTE[1])
    if reference is not None:
        label, x, y = reference
        px, py = panel.to_pixel(x, y)
        panel.draw.rectangle((px - 4, py - 4, px + 4, py + 4), fill=PALETTE[0])
        names.append(label)
        colours.append(PALETTE[0])
    panel.legend(names, colours)
    return _save(img, path, overwrite=overwrite)


def _save(img: Image.Image, path: str | os.PathLike[str], *, overwrite: bool = True) -> Path:
    """Write ``img`` to ``path`` as a PNG, atomically (its folder is created when missing)."""
    path = Path(path)
    with atomic_open(path, "wb", overwrite=overwrite) as f:
        img.save(f, format="PNG")
    return path
