"""X3D (Feichtenhofer 2020) in pytorchvideo's published layout: a stem (1x3x3 spatial conv, then a
depthwise 5x1x1 temporal conv), four stages of expanded 3-D bottlenecks (1x1x1 expand -> 3x3x3 depthwise ->
BN + squeeze-excitation on every other block -> swish -> 1x1x1 project, residual), and the head's feature
layers (1x1x1 conv, global pooling, 1x1x1 conv to `head_dim`); fvc's head maps those to one logit.

The backbone's state-dict names and shapes equal those of pytorchvideo's `create_x3d` at the same sizes
(`blocks.0.conv.conv_t.weight`, ..., `blocks.5.pool.post_conv.weight`), so the Kinetics checkpoints
X3D_S.pyth and X3D_M.pyth load by name (`fvc import-weights`, `fvc.weights.kinetics`); only their 400-class
projection (`blocks.5.proj`) is not fvc's. X3D-S and X3D-M share one layout (they differ in clip length
and crop size only: `PRESET_CLIPS`).

params: `width` (stem and first-stage channels; stage i has width * 2**i, default 12), `depths` (blocks per
stage, [1, 1, 2, 1]), `expansion` (bottleneck inner channels / stage channels, 2.25), `se_ratio` (0.0625),
`head_dim` (channels of the head's last 1x1x1 conv, 128), `dropout` (0.5), `backbone` (a .safetensors file
written by `fvc import-weights`), `freeze_backbone` (default true with a backbone) and `unfreeze_last_blocks`
(with a frozen backbone, its last N residual blocks and the head's convs train too; default 0; the freezing
is `fvc.models.kinetics_backbone`'s). Temporal kernels are the published ones (stem 5, stages 3), not
clamped to the clip length: that would change published shapes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fvc.models.kinetics_backbone import KineticsBackbone
from fvc.models.slowfast import KINETICS_MEAN, KINETICS_STD, ResBlock, ResStage, ThreeConvs, conv3d

_X3D_SM = {"width": 24, "depths": [3, 5, 11, 7], "expansion": 2.25, "se_ratio": 0.0625, "head_dim": 2048}
PRESETS: dict[str, dict[str, object]] = {"x3d_s": dict(_X3D_SM), "x3d_m": dict(_X3D_SM)}
# The published clip of each preset (num_frames, size): Kinetics training used these.
PRESET_CLIPS = {"x3d_s": (13, 160), "x3d_m": (16, 224)}
# The params that fix the backbone's tensors (an imported backbone must match them).
ARCHITECTURE = ("width", "depths", "expansion", "se_ratio", "head_dim")


def round_width(width: float, multiplier: float, divisor: int = 8) -> int:
    """pytorchvideo's `round_width`: `width * multiplier` to a multiple of `divisor` (at least `divisor`)."""
    scaled = width * multiplier
    out = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * scaled else out


class Conv2plus1d(nn.Module):
    """The stem's factorised conv. pytorchvideo names the spatial conv `conv_t` and the temporal one
    `conv_xy`; the names are kept so that checkpoints load."""

    def __init__(self, cout: int) -> None:
        super().__init__()
        self.conv_t = nn.Conv3d(3, cout, (1, 3, 3), (1, 2, 2), (0, 1, 1), bias=False)
        self.conv_xy = conv3d(cout, cout, (5, 1, 1), groups=cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_xy(self.conv_t(x))


class X3DStem(nn.Module):
    def __init__(self, cout: int) -> None:
        super().__init__()
        self.conv = Conv2plus1d(cout)
        self.norm = nn.BatchNorm3d(cout)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.norm(self.conv(x)))


class SqueezeExcitation(nn.Module):
    """Channel attention from the clip's global average (fvcore's SqueezeExcitation, 3-D)."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv3d(channels, reduced, 1),
            nn.ReLU(inplace=True),
            nn.Conv3d(reduced, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.block(x.mean(dim=(2, 3, 4), keepdim=True))


class X3DBottleneck(ThreeConvs):
    """1x1x1 expand -> depthwise 3x3x3 (spatial stride) -> BN (+ SE) -> swish -> 1x1x1 project."""

    def __init__(self, cin: int, inner: int, cout: int, stride: int, se_ratio: float) -> None:
        super().__init__()
        self.conv_a = conv3d(cin, inner, (1, 1, 1))
        self.norm_a = nn.BatchNorm3d(inner)
        self.act_a = nn.ReLU(inplace=True)
        self.conv_b = conv3d(inner, inner, (3, 3, 3), (1, stride, stride), groups=inner)
        se = SqueezeExcitation(inner, round_width(inner, se_ratio)) if se_ratio > 0 else nn.Identity()
        self.norm_b = nn.Sequential(nn.BatchNorm3d(inner), se)
        self.act_b = nn.SiLU(inplace=True)
        self.conv_c = conv3d(inner, cout, (1, 1, 1))
        self.norm_c = nn.BatchNorm3d(cout)


class X3DBlock(ResBlock):
    """Residual X3D bottleneck. As in pytorchvideo, a strided shortcut that keeps the width is a bare
    projection (no BatchNorm)."""

    def __init__(self, cin: int, inner: int, cout: int, stride: int, se_ratio: float) -> None:
        project = cin != cout or stride > 1
        super().__init__(
            X3DBottleneck(cin, inner, cout, stride, se_ratio),
            conv3d(cin, cout, (1, 1, 1), (1, stride, stride)) if project else None,
            nn.BatchNorm3d(cout) if cin != cout else None,
        )


class ProjectedPool(nn.Module):
    """1x1x1 conv -> BN -> ReLU -> global average -> 1x1x1 conv -> ReLU."""

    def __init__(self, cin: int, inner: int, cout: int) -> None:
        super().__init__()
        self.pre_conv = conv3d(cin, inner, (1, 1, 1))
        self.pre_norm = nn.BatchNorm3d(inner)
        self.pre_act = nn.ReLU(inplace=True)
        self.post_conv = conv3d(inner, cout, (1, 1, 1))
        self.post_act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre_act(self.pre_norm(self.pre_conv(x))).mean(dim=(2, 3, 4), keepdim=True)
        return self.post_act(self.post_conv(x)).flatten(1)


class HeadFeatures(nn.Module):
    """The pretrained part of pytorchvideo's X3D head (`pool`); its projection is fvc's `head`."""

    def __init__(self, cin: int, inner: int, cout: int) -> None:
        super().__init__()
        self.pool = ProjectedPool(cin, inner, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x)


class X3D(KineticsBackbone):
    """See the module docstring."""

    def __init__(
        self,
        num_frames: int,
        size: int,
        *,
        width: int = 12,
        depths: Sequence[int] = (1, 1, 2, 1),
        expansion: float = 2.25,
        se_ratio: float = 0.0625,
        head_dim: int = 128,
        dropout: float = 0.5,
        backbone: str | None = None,
        freeze_backbone: bool | None = None,
        unfreeze_last_blocks: int = 0,
    ) -> None:
        depths = [int(d) for d in depths]
        freeze = bool(backbone) if freeze_backbone is None else freeze_backbone
        super().__init__(
            {
                "width": width,
                "depths": depths,
                "expansion": expansion,
                "se_ratio": se_ratio,
                "head_dim": head_dim,
                "dropout": dropout,
                "backbone": backbone,
                "freeze_backbone": freeze,
                "unfreeze_last_blocks": unfreeze_last_blocks,
            },
            num_frames,
            size,
        )
        blocks: list[nn.Module] = [X3DStem(width)]
        cin = width
        for i, depth in enumerate(depths):
            cout = width * 2**i
            inner = int(expansion * cout)
            blocks.append(
                ResStage(
                    [
                        X3DBlock(
                            cin if j == 0 else cout,
                            inner,
                            cout,
                            2 if j == 0 else 1,
                            se_ratio if j % 2 == 0 else 0.0,
                        )
                        for j in range(depth)
                    ]
                )
            )
            cin = cout
        blocks.append(HeadFeatures(cin, int(expansion * cin), head_dim))
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Sequential(nn.Dropout(float(dropout)), nn.Linear(head_dim, 1))
        self.attach_backbone("x3d", ARCHITECTURE)

    def backbone_blocks(self) -> list[str]:
        return [
            f"blocks.{i}.res_blocks.{j}"
            for i, stage in enumerate(self.blocks)
            if isinstance(stage, ResStage)
            for j in range(len(stage.res_blocks))
        ]

    def backbone_tail(self) -> list[str]:
        return [f"blocks.{len(self.blocks) - 1}"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.trainable["blocks"] is not False):
            h = ((x - KINETICS_MEAN) / KINETICS_STD).transpose(1, 2).contiguous()  # [B, 3, T, H, W]
            h = self.blocks[0](h)
            for stage in self.blocks[1:-1]:
                assert isinstance(stage, ResStage)
                h = self.run_blocks(stage.res_blocks, h)
            features = self.blocks[-1](h)
        return self.head(features).squeeze(-1)
