"""Per-layer hexagon maps of the average shower of cell geometries, for the evaluation report.

Every cell is drawn as its flat-top hexagon (a vertex along +x, flat edges facing ±y, as
:mod:`calogen.cell_geometry`) of its flat-to-flat width ``w`` around its centre: the vertices lie at
``w / sqrt(3)`` from the centre at 0°, 60°, …, 300°. Colour is the mean energy per cell on a common
logarithmic scale per layer (five decades below the layer's largest mean), cells without energy in
light grey. One row per layer, one column per sample (the reference first); the layers are those
around the reference's shower maximum (:func:`maximum_layers`). :func:`hexmap_section` embeds the
figure as a PNG in an HTML section of the report.

Example:
    >>> hexagon_vertices(np.array([0.0]), np.array([0.0]), np.array([np.sqrt(3.0)]))[0, :2].round(6).tolist()
    [[1.0, 0.0], [0.5, 0.866025]]
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np

from calogen.cell_geometry import CellGeometry

__all__ = ["hexagon_vertices", "hexmap_figure", "hexmap_section", "maximum_layers"]

DECADES = 5.0
"""Colour range below the largest mean cell energy of a layer, in decades."""
_EMPTY = "#eceff1"


def hexagon_vertices(x: np.ndarray, y: np.ndarray, width: np.ndarray) -> np.ndarray:
    """``(n, 6, 2)`` vertices of flat-top hexagons centred on ``(x, y)`` with flat-to-flat ``width`` (mm)."""
    angles = np.deg2rad(np.arange(0, 360, 60))
    radius = np.asarray(width, np.float64)[:, None] / np.sqrt(3.0)
    return np.stack([x[:, None] + radius * np.cos(angles), y[:, None] + radius * np.sin(angles)], axis=-1)


def maximum_layers(mean_shower: np.ndarray, geometry: CellGeometry, n: int = 3) -> list[int]:
    """``n`` consecutive layers centred (where the stack allows) on the layer of largest mean energy."""
    energy = geometry.layer_energies(np.asarray(mean_shower)[None, :])[0]
    n = min(n, geometry.n_layers)
    first = int(np.clip(int(np.argmax(energy)) - n // 2, 0, geometry.n_layers - n))
    return list(range(first, first + n))


def hexmap_figure(geometry: CellGeometry, mean_showers: dict[str, np.ndarray], layers: list[int]):  # type: ignore[no-untyped-def]
    """A matplotlib figure of ``layers`` (rows) by samples (columns, in ``mean_showers`` order).

    Args:
        geometry: the cell geometry.
        mean_showers: sample name -> average shower ``(voxels,)`` in MeV, the reference first.
        layers: layer indices to draw.
    """
    import matplotlib
    from matplotlib import colors
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure

    names = list(mean_showers)
    fig = Figure(figsize=(2.6 * len(names) + 0.8, 2.5 * len(layers)), layout="constrained")
    axes = fig.subplots(len(layers), len(names), squeeze=False)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad=_EMPTY)
    for row, layer in zip(axes, layers, strict=True):
        cells = geometry.layers[layer]
        polygons = hexagon_vertices(cells.x, cells.y, cells.cell_width)
        values = {name: np.asarray(mean_showers[name])[geometry.layer_slice(layer)] for name in names}
        top = max(float(np.max(v)) for v in values.values())
        norm = colors.LogNorm(vmin=top * 10**-DECADES, vmax=top) if top > 0 else colors.LogNorm(1e-3, 1.0)
        for ax, name in zip(row, names, strict=True):
            shown = np.where(values[name] > 0, values[name], np.nan)
            ax.add_collection(PolyCollection(polygons, array=np.ma.masked_invalid(shown), cmap=cmap, norm=norm, edgecolors="face", linewidths=0.2))
            ax.set_xlim(polygons[..., 0].min(), polygons[..., 0].max())
            ax.set_ylim(polygons[..., 1].min(), polygons[..., 1].max())
            ax.set_aspect("equal")
            ax.set_title(f"{name}, layer {layer}", fontsize=8)
            ax.tick_params(labelsize=6)
        fig.colorbar(row[-1].collections[0], ax=list(row), label="mean cell energy [MeV]", shrink=0.9)
    return fig


def hexmap_section(geometry: CellGeometry, mean_showers: dict[str, np.ndarray], n_layers: int = 3) -> str:
    """An HTML ``<section>`` with the hexagon maps (PNG, embedded) of the layers around the maximum of the
    first (reference) sample's average shower."""
    layers = maximum_layers(next(iter(mean_showers.values())), geometry, n_layers)
    buffer = io.BytesIO()
    hexmap_figure(geometry, mean_showers, layers).savefig(buffer, format="png", dpi=110)
    image = base64.b64encode(buffer.getvalue()).decode("ascii")
    note = (
        f"Mean energy per cell of {html.escape(geometry.name)}, drawn as hexagons on the cell centres, layers "
        f"{', '.join(map(str, layers))} around the reference's shower maximum; logarithmic colour scale per layer "
        f"over {DECADES:g} decades, cells without energy in grey."
    )
    return (
        f'<section id="hexmaps"><h2>Average shower per layer</h2><p class="note">{note}</p>'
        f'<img alt="hexagon maps of the average shower" style="max-width:100%" src="data:image/png;base64,{image}"></section>'
    )
