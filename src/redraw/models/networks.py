"""Building blocks: Linear+LayerNorm+SiLU MLPs and the 64x64 conv encoder/decoder."""

from __future__ import annotations

import math

import torch
from torch import nn


def mlp(inp: int, units: int, layers: int, out: int | None = None) -> nn.Sequential:
    """``layers`` x (Linear(units) + LayerNorm + SiLU), then an optional Linear(out)."""
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Linear(inp if i == 0 else units, units, bias=False), nn.LayerNorm(units), nn.SiLU()]
    if out is not None:
        mods.append(nn.Linear(units if layers else inp, out))
    return nn.Sequential(*mods)


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of an NCHW tensor."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvEncoder(nn.Module):
    """64x64x3 uint8 image -> flat features: stride-2 4x4 convs (depth x 1, 2, 4, 8), LN, SiLU."""

    def __init__(self, depth: int = 32, image_size: int = 64, stages: int = 4):
        super().__init__()
        mods, ch = [], 3
        for i in range(stages):
            out = depth * 2**i
            mods += [nn.Conv2d(ch, out, 4, 2, 1, bias=False), ChannelNorm(out), nn.SiLU()]
            ch = out
        self.net = nn.Sequential(*mods)
        self.out_dim = ch * (image_size // 2**stages) ** 2

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        lead = image.shape[:-3]
        x = image.reshape(-1, *image.shape[-3:]).permute(0, 3, 1, 2).float() / 255.0 - 0.5
        return self.net(x).reshape(*lead, -1)


class ConvDecoder(nn.Module):
    """Latent -> 64x64x3 image in [-0.5, 0.5] (the encoder mirrored with transposed convs)."""

    def __init__(self, inp: int, depth: int = 32, image_size: int = 64, stages: int = 4):
        super().__init__()
        self.start = image_size // 2**stages
        self.ch = depth * 2 ** (stages - 1)
        self.proj = nn.Linear(inp, self.ch * self.start**2)
        mods, ch = [], self.ch
        for i in reversed(range(stages)):
            out = 3 if i == 0 else depth * 2 ** (i - 1)
            mods.append(nn.ConvTranspose2d(ch, out, 4, 2, 1, bias=i == 0))
            if i:
                mods += [ChannelNorm(out), nn.SiLU()]
            ch = out
        self.net = nn.Sequential(*mods)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        x = self.proj(z).reshape(-1, self.ch, self.start, self.start)
        y = self.net(x).permute(0, 2, 3, 1)
        return y.reshape(*lead, *y.shape[1:])


def zero_init_(layer: nn.Linear) -> nn.Linear:
    nn.init.zeros_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


def uniform_init_(module: nn.Module) -> nn.Module:
    """DreamerV3-style fan-average truncated-normal-ish init for Linear/Conv weights."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight)
            std = math.sqrt(1.0 / ((fan_in + fan_out) / 2)) / 0.87962566
            nn.init.trunc_normal_(m.weight, 0.0, std, -2 * std, 2 * std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module
