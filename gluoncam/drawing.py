"""Figures of explanations: rows of panels (an image each, with boxes, points or a legend drawn over it), coloured
segmentation masks. Boxes, labels and points are drawn by matplotlib in display space, so they stay legible
whatever the image's size."""
import textwrap
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

Color = Tuple[float, float, float]


@dataclass
class Box:
    """A rectangle (corners in the panel image's pixels) with a label."""
    x0: float
    y0: float
    x1: float
    y1: float
    label: str
    color: Color


@dataclass
class Point:
    """A marked position (pixels) with a label."""
    x: float
    y: float
    label: str


@dataclass
class Panel:
    """One picture of a figure, with what to draw over it."""
    title: str
    image: np.ndarray
    boxes: Sequence[Box] = ()
    points: Sequence[Point] = ()
    legend: Sequence[Tuple[str, Color]] = ()


def class_colors(names: Sequence[str]) -> np.ndarray:
    """A colour per class (``len(names)`` x 3, floats in [0, 1]): tab20's ten strong colours, then its ten pale
    ones, repeating; 'background' is black."""
    from matplotlib import colormaps
    strong_first = np.r_[0:20:2, 1:20:2]
    palette = colormaps['tab20'](strong_first[np.arange(len(names)) % 20])[:, :3]
    palette[[name.lower() == 'background' for name in names]] = 0
    return palette


def color_mask(mask: np.ndarray, colors: np.ndarray, image: Optional[np.ndarray] = None,
               alpha: float = 0.6) -> np.ndarray:
    """A class-id mask (h x w) as an RGB uint8 picture, blended over ``image`` (H x W x 3, resized to it) if
    given."""
    picture = np.uint8(np.round(colors[mask] * 255))
    if image is None:
        return picture
    import cv2
    height, width = image.shape[:2]
    picture = cv2.resize(picture, (width, height), interpolation=cv2.INTER_NEAREST)
    return cv2.addWeighted(picture, alpha, image, 1 - alpha, 0)


def save_panels(path: str, panels: List[Panel], title: str, columns: int = 4, dpi: int = 80) -> None:
    """Draw ``panels`` left to right, ``columns`` per row, under ``title``, into the image file ``path``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    columns = min(columns, len(panels))
    rows = -(-len(panels) // columns)
    aspect = panels[0].image.shape[0] / panels[0].image.shape[1]
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, (4 * min(aspect, 1.5) + 0.5) * rows + 0.4),
                                squeeze=False)
    for axis in axes.flat:
        axis.axis('off')
    for axis, panel in zip(axes.flat, panels):
        draw_panel(axis, panel)
    figure.suptitle(textwrap.fill(title, 45 * columns))
    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    plt.close(figure)


def draw_panel(axis, panel: Panel) -> None:
    """One panel on a matplotlib axis: the image, its boxes, points and legend, and its title."""
    axis.imshow(panel.image, cmap='gray' if panel.image.ndim == 2 else None)
    axis.set_title(panel.title)
    for box in panel.boxes:
        draw_box(axis, box)
    for point in panel.points:
        draw_point(axis, point)
    if panel.legend:
        draw_legend(axis, panel.legend)


def draw_box(axis, box: Box) -> None:
    """The rectangle, outlined in black to show on any background, its label above its top left corner."""
    from matplotlib import patheffects
    from matplotlib.patches import Rectangle
    rectangle = Rectangle((box.x0, box.y0), box.x1 - box.x0, box.y1 - box.y0, fill=False, edgecolor=box.color,
                          linewidth=2)
    rectangle.set_path_effects([patheffects.Stroke(linewidth=3.5, foreground='black'), patheffects.Normal()])
    axis.add_patch(rectangle)
    if box.label:
        axis.text(box.x0, box.y0, box.label, fontsize=9, color=text_color(box.color), va='bottom', ha='left',
                  clip_on=True, bbox=dict(facecolor=box.color, edgecolor='black', linewidth=0.5, pad=1.5))


def text_color(background: Color) -> str:
    """Black on light colours, white on dark ones."""
    red, green, blue = background
    return 'black' if 0.299 * red + 0.587 * green + 0.114 * blue > 0.55 else 'white'


def draw_point(axis, point: Point) -> None:
    """A red dot ringed in white, its label beside it."""
    axis.plot([point.x], [point.y], marker='o', markersize=9, markerfacecolor='red', markeredgecolor='white',
              markeredgewidth=2)
    axis.annotate(point.label, (point.x, point.y), xytext=(8, -8), textcoords='offset points', fontsize=9,
                  color='white', bbox=dict(facecolor='red', edgecolor='none', pad=1.5, alpha=0.85))


def draw_legend(axis, entries: Sequence[Tuple[str, Color]]) -> None:
    """A swatch and a name per entry, in the lower left corner."""
    from matplotlib.patches import Patch
    axis.legend(handles=[Patch(facecolor=color, edgecolor='white', label=name) for name, color in entries],
                loc='lower left', fontsize=8, framealpha=0.8)
