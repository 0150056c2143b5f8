"""Conditional cylindrical U-Net over ``(layer, alpha, r)`` — the shape network.

Every convolution is cylindrical: 3x3x3 over (layer, alpha, r) with circular padding in alpha and zero
padding in layer and r, and it sees two coordinate channels (r bin and layer position, in [-1, 1]) next
to its input (as a batch-independent bias map). Residual blocks receive the embedding of (time, conditions) by scale-and-shift after the
first convolution: ``h <- GN(h) * (1 + s) + b``. The coarse levels add linear attention (softmax over
features for queries, over positions for keys; cost linear in the number of cells). Downsampling halves
layer and r (never alpha), so the whole network commutes with rolls in alpha (unless it also sees alpha coordinates, for direction conditioning). An optional learned linear
map compresses the layer axis of the input (e.g. 45 -> 12) and another expands the output back to all
layers. The output convolution gives five channels: the coefficients of a per-voxel switch
(:func:`voxel_head`) applied to the network's own input at full resolution. Through the compression
alone the network could not see each voxel's current value, so its velocities would be smooth across
layers (blurred, over-populated showers at few steps); the head restores that dependence for a few
element-wise operations per voxel (full-resolution convolutions would cost more than the whole U-Net).

References: CaloDiffusion, Amram & Pedro, arXiv:2308.03876 (cylindrical convolutions, layer
compression); Shen et al., "Efficient attention", arXiv:1812.01243 (linear attention).

Example:
    >>> from calogen.geometry import Geometry
    >>> net = ShapeNet(Geometry.builtin("tiny"), cond_dim=7, channels=(4, 8), attention_levels=(1,))
    >>> net(torch.zeros(2, 120), torch.zeros(2), torch.zeros(2, 7)).shape
    torch.Size([2, 120])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import forward_ad

from calogen.cell_geometry import CellGeometry
from calogen.geometry import Geometry
from calogen.models.cell_map import CellGridMap
from calogen.models.glam import GridMap
from calogen.models.layers import ConditionEmbedding, ConstantCache, group_norm

__all__ = ["HEAD_CHANNELS", "CylindricalConv", "ShapeNet", "UNet", "voxel_head"]


def _coordinates(shape: tuple[int, int, int], layer_position: tuple[float, ...] | None = None, *, alpha: bool = False) -> torch.Tensor:
    """Coordinate channels ``(1, 2, L, A, R)``: layer position and r bin, both in [-1, 1], and with ``alpha`` also
    ``cos`` and ``sin`` of the alpha bin centres ``(1, 4, L, A, R)`` (on the CPU, even when the network is built on
    the meta device to count its parameters)."""
    n_l, n_a, n_r = shape
    lay = torch.tensor(layer_position, device="cpu") if layer_position else torch.linspace(-1, 1, n_l, device="cpu")
    rad = torch.linspace(-1, 1, n_r, device="cpu") if n_r > 1 else torch.zeros(1, device="cpu")
    channels = [lay[:, None, None].expand(shape), rad[None, None, :].expand(shape)]
    if alpha:
        angle = 2 * math.pi * (torch.arange(n_a, device="cpu", dtype=torch.float64) + 0.5) / n_a
        channels += [torch.cos(angle)[None, :, None].expand(shape), torch.sin(angle)[None, :, None].expand(shape)]
    return torch.stack([c.float() for c in channels])[None]


def _pooled(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    return (math.ceil(shape[0] / 2), shape[1], math.ceil(shape[2] / 2))


def _single_cpu_conv(x: torch.Tensor) -> bool:
    """Whether to convolve ``x`` with oneDNN directly: one float32 shower on the CPU, for which ``F.conv3d`` picks a
    native kernel that takes about twice as long (from batch 2 it uses oneDNN itself, whose rows do not depend
    on the batch). Not where a gradient, a tangent (oneDNN has no forward-mode AD), autocast or an ONNX trace
    needs ``F.conv3d``."""
    return (
        x.shape[0] == 1 and x.device.type == "cpu" and x.dtype == torch.float32 and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled and not torch.is_grad_enabled() and forward_ad._current_level < 0 and not torch.jit.is_tracing()
        and not torch.is_autocast_enabled("cpu")
    )  # fmt: skip


def _conv3d(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``, at batch 1 on the CPU with the kernel ``F.conv3d`` uses for larger batches (:func:`_single_cpu_conv`)."""
    if _single_cpu_conv(x):
        return torch.ops.aten.mkldnn_convolution(x, conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation, conv.groups)
    return conv(x)


class CylindricalConv(nn.Module):
    """3x3x3 convolution over ``(B, C, L, A, R)`` with circular alpha padding and coordinate channels.

    Convolving ``[x, coords]`` equals ``conv_x(x) + conv_c(coords)``; the second term does not depend on
    the batch, so it is computed on ``(1, 2, L, A, R)`` and broadcast; in inference mode (sampling) it is
    kept between calls until the weights change (:class:`~calogen.models.layers.ConstantCache`). A single
    shower is convolved with the kernel of a batch (:func:`_single_cpu_conv`).

    Args:
        c_in, c_out: channels.
        coords: ``(1, 2, L, A, R)`` coordinate channels.
    """

    def __init__(self, c_in: int, c_out: int, coords: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("coords", coords, persistent=False)
        self.conv = nn.Conv3d(c_in, c_out, 3, padding=(1, 0, 1))
        self.coord_conv = nn.Conv3d(coords.shape[1], c_out, 3, padding=(1, 0, 1), bias=False)
        self._coord_term = ConstantCache()

    @staticmethod
    def _pad_alpha(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[:, :, :, -1:], x, x[:, :, :, :1]], dim=3)

    def _coord_output(self) -> torch.Tensor:
        """``conv_c(coords)`` ``(1, c_out, L, A, R)`` in the weights' dtype (which the input must have too)."""
        return self.coord_conv(self._pad_alpha(self.coords.to(self.coord_conv.weight.dtype)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        coord_term = self._coord_term.get(self._coord_output, self.coord_conv.weight, self.coords)
        return _conv3d(self.conv, self._pad_alpha(x)) + coord_term


class ResBlock(nn.Module):
    """Residual block ``x + conv(SiLU(GN(conv(SiLU(GN(x)))) * (1 + s) + b))`` with ``(s, b)`` from the embedding."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, coords: torch.Tensor) -> None:
        super().__init__()
        self.norm1 = group_norm(c_in)
        self.conv1 = CylindricalConv(c_in, c_out, coords)
        self.film = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = group_norm(c_out)
        self.conv2 = CylindricalConv(c_out, c_out, coords)
        self.skip = nn.Conv3d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None, None].chunk(2, dim=1)
        h = self.conv2(F.silu(self.norm2(h) * (1 + scale) + shift))
        return self.skip(x) + h


class LinearAttention(nn.Module):
    """Residual multi-head linear attention over all cells of ``(B, C, L, A, R)``."""

    def __init__(self, channels: int, heads: int = 2) -> None:
        super().__init__()
        self.heads = math.gcd(channels, heads)
        self.norm = group_norm(channels)
        self.qkv = nn.Conv3d(channels, 3 * channels, 1)
        self.out = nn.Conv3d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3 * self.heads, c // self.heads, -1).chunk(3, dim=1)
        q = q.softmax(dim=2) * (c // self.heads) ** -0.5
        k = k.softmax(dim=3)
        context = k @ v.transpose(2, 3)  # (B, heads, d, e): sum over cells n of k_dn v_en
        h = (context.transpose(2, 3) @ q).reshape(x.shape)
        return x + self.out(h)


HEAD_CHANNELS = 5
"""Output channels of the U-Net proper: the coefficients of :func:`voxel_head`."""


def voxel_head(coeffs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-voxel output ``c0 + c1 x + c2 tanh((1 + c3) x + c4)`` from coefficients ``(B, 5, ...)`` and input ``x (B, 1, ...)``.

    A few element-wise operations at full resolution: each voxel's output depends on its own current
    value through a smooth switch whose position, slope and height the network sets from context.
    """
    c0, c1, c2, c3, c4 = coeffs.unbind(dim=1)
    x = x[:, 0]
    return (c0 + c1 * x + c2 * torch.tanh((1 + c3) * x + c4)).unsqueeze(1)


class UNet(nn.Module):
    """The U-Net proper on ``(B, 1, L, A, R)`` grids; see the module docstring.

    Args:
        grid_shape: ``(L, A, R)``.
        cond_dim: size of the condition vector.
        channels: channels per level, finest first.
        attention_levels: levels (indices into ``channels``) with linear attention; the bottleneck always has it.
        compress_layers: if set, the layer count the levels work on.
        emb_dim: size of the condition embedding.
        layer_position: ``(L,)`` layer coordinates; default evenly spaced.
        alpha_coordinates: also give every convolution ``cos alpha`` and ``sin alpha``, and the stem a second input
            channel ``u_x cos alpha + u_y sin alpha`` from condition columns 1 and 2 (the direction's transverse unit-vector
            components ``sin theta cos phi``, ``sin theta sin phi``): how far each grid cell lies towards the direction's
            azimuth, so the network can move energy there (an inclined shower's centre moves along it); the network then
            no longer commutes with rolls in alpha.
    """

    def __init__(
        self,
        grid_shape: tuple[int, int, int],
        cond_dim: int,
        *,
        channels: tuple[int, ...] = (16, 32),
        attention_levels: tuple[int, ...] = (1,),
        compress_layers: int | None = None,
        emb_dim: int = 64,
        layer_position: tuple[float, ...] | None = None,
        alpha_coordinates: bool = False,
    ) -> None:
        super().__init__()
        self.embed = ConditionEmbedding(cond_dim, emb_dim)
        shape = grid_shape
        coords = _coordinates(grid_shape, layer_position, alpha=alpha_coordinates)
        self.compress = self.expand = None
        out_channels = HEAD_CHANNELS
        if compress_layers is not None and compress_layers < grid_shape[0]:
            self.compress = nn.Linear(grid_shape[0], compress_layers, bias=False)
            self.expand = nn.Linear(compress_layers, grid_shape[0])
            shape = (compress_layers, *grid_shape[1:])
            coords = _coordinates(shape, alpha=alpha_coordinates)
        self.alpha_coordinates = alpha_coordinates
        if alpha_coordinates:
            angle = 2 * math.pi * (torch.arange(grid_shape[1], device="cpu", dtype=torch.float64) + 0.5) / grid_shape[1]
            self.register_buffer("azimuth", torch.stack([torch.cos(angle), torch.sin(angle)]).float(), persistent=False)
        self.stem = CylindricalConv(2 if alpha_coordinates else 1, channels[0], coords)
        self.shapes: list[tuple[int, int, int]] = []
        self.down = nn.ModuleList()
        self.down_attn = nn.ModuleList()
        c_prev = channels[0]
        for level, c in enumerate(channels):
            self.shapes.append(shape)
            self.down.append(ResBlock(c_prev, c, emb_dim, _coordinates(shape, alpha=alpha_coordinates)))
            self.down_attn.append(LinearAttention(c) if level in attention_levels else nn.Identity())
            c_prev = c
            if level < len(channels) - 1:
                shape = _pooled(shape)
        self.mid = ResBlock(c_prev, c_prev, emb_dim, _coordinates(shape, alpha=alpha_coordinates))
        self.mid_attn = LinearAttention(c_prev)
        self.up = nn.ModuleList()
        for level in reversed(range(len(channels))):
            c = channels[level]
            self.up.append(ResBlock(c_prev + c, c, emb_dim, _coordinates(self.shapes[level], alpha=alpha_coordinates)))
            c_prev = c
        self.out_norm = group_norm(2 * channels[0])
        self.out = CylindricalConv(2 * channels[0], out_channels, coords)
        for param in self.out.parameters():  # zero coefficients: the network starts as the zero map
            nn.init.zeros_(param)
        if self.expand is not None:
            nn.init.zeros_(self.expand.bias)

    def _along_layers(self, layer: nn.Linear, h: torch.Tensor) -> torch.Tensor:
        return layer(h.transpose(2, 4)).transpose(2, 4)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Output ``(B, 1, L, A, R)`` for input ``x (B, 1, L, A, R)``, time ``t (B,)``, condition ``(B, C)``."""
        emb = self.embed(t, cond)
        x_in = x
        if self.alpha_coordinates:  # (B, 1, L, A, R): the direction's projection on every alpha bin
            toward = (cond[:, 1:3].to(x.dtype) @ self.azimuth.to(x.dtype))[:, None, None, :, None]
            x = torch.cat([x, toward.expand_as(x)], dim=1)
        if self.compress is not None:
            x = self._along_layers(self.compress, x)
        stem = h = self.stem(x)
        skips = []
        for level, (block, attn) in enumerate(zip(self.down, self.down_attn, strict=True)):
            h = attn(block(h, emb))
            skips.append(h)
            if level < len(self.down) - 1:
                h = F.avg_pool3d(h, (2, 1, 2), ceil_mode=True)
        h = self.mid_attn(self.mid(h, emb))
        shape = self.shapes[-1]
        for level, block in zip(reversed(range(len(self.shapes))), self.up, strict=True):
            if self.shapes[level] != shape:
                shape = self.shapes[level]
                h = F.interpolate(h, size=shape, mode="nearest")
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        out = self.out(F.silu(self.out_norm(torch.cat([h, stem], dim=1))))
        if self.expand is not None:
            out = self._along_layers(self.expand, out)
        return voxel_head(out, x_in)


class ShapeNet(nn.Module):
    """Shape network on flat showers: GLaM (or reshape) -> :class:`UNet` -> back to the readout cells.

    A cell geometry (``geometry.kind == "cells"``) is mapped by :class:`~calogen.models.cell_map.CellGridMap`.

    Args:
        geometry: the readout.
        cond_dim: size of the condition vector (scaled energy + layer-energy vector [+ direction]).
        cell_alpha: alpha bins of a cell geometry's grid (0: :func:`~calogen.models.cell_map.grid_size`'s default).
        **unet: options of :class:`UNet`.
    """

    def __init__(self, geometry: Geometry | CellGeometry, cond_dim: int, *, cell_alpha: int = 0, **unet: object) -> None:
        super().__init__()
        self.grid: GridMap | CellGridMap = CellGridMap(geometry, n_alpha=cell_alpha) if geometry.kind == "cells" else GridMap(geometry)  # type: ignore[arg-type]
        self.unet = UNet(self.grid.grid_shape, cond_dim, layer_position=self.grid.layer_position, **unet)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """``(B, voxels)`` output for ``x (B, voxels)``, ``t (B,)``, ``cond (B, C)``."""
        return self.grid.decode(self.unet(self.grid.encode(x), t, cond))
