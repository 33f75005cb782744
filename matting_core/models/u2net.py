"""U²-Net (Qin et al., 2020) for salient-object matting: the full 44M-parameter network and
U²-Net-P, its 1.1M-parameter sibling. Both are the same nested U of RSU blocks; only the
channel widths differ, so one class builds either from a table of widths.

Written from the paper's reference code with batch-norm folded away: the published ONNX
exports (rembg's u2net.onnx and u2netp.onnx) have every RSU conv as a Conv with bias
followed by ReLU, so each block here is exactly that and the state dict maps 1:1 onto the
exports' initializers.
"""

import torch
import torch.nn.functional as F
from torch import nn


class ConvReLU(nn.Module):
    """The reference REBNCONV with its batch-norm folded into the conv."""

    def __init__(self, in_ch: int, out_ch: int, dilation: int = 1):
        super().__init__()
        # Attribute name kept from the reference code so keys read the same.
        self.conv_s1 = nn.Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv_s1(x))


def _pool(x: torch.Tensor) -> torch.Tensor:
    # ceil_mode keeps odd sizes (320 -> 160 -> 80 -> 40 -> 20 -> 10 -> 5 -> 3).
    return F.max_pool2d(x, 2, stride=2, ceil_mode=True)


def _upsample_like(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    # align_corners=False is the export's "pytorch_half_pixel" Resize.
    return F.interpolate(x, size=like.shape[2:], mode="bilinear", align_corners=False)


class RSU(nn.Module):
    """Residual U-block of `height` levels (RSU-7 ... RSU-4), or RSU-4F when `dilated`.

    RSU-L pools between levels and uses one dilated conv at the bottom; RSU-4F
    keeps the resolution and grows dilation 1, 2, 4, 8 instead. Modules are
    registered in execution order, which the ONNX conversion relies on.
    """

    def __init__(self, height: int, in_ch: int, mid_ch: int, out_ch: int, dilated: bool = False):
        super().__init__()
        self.height, self.dilated = height, dilated
        self.rebnconvin = ConvReLU(in_ch, out_ch)
        for i in range(1, height + 1):
            dilation = 2 ** (i - 1) if dilated else (2 if i == height else 1)
            setattr(self, f"rebnconv{i}", ConvReLU(out_ch if i == 1 else mid_ch, mid_ch, dilation))
        for i in range(height - 1, 0, -1):
            dilation = 2 ** (i - 1) if dilated else 1
            setattr(self, f"rebnconv{i}d", ConvReLU(2 * mid_ch, out_ch if i == 1 else mid_ch, dilation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hxin = self.rebnconvin(x)
        skips, hx = [], hxin
        for i in range(1, self.height):
            hx = getattr(self, f"rebnconv{i}")(hx)
            skips.append(hx)
            if not self.dilated and i < self.height - 1:
                hx = _pool(hx)
        hx = getattr(self, f"rebnconv{self.height}")(skips[-1])
        for i in range(self.height - 1, 0, -1):
            hx = getattr(self, f"rebnconv{i}d")(torch.cat((hx, skips[i - 1]), 1))
            if not self.dilated and i > 1:
                hx = _upsample_like(hx, skips[i - 2])
        return hx + hxin


# (in, mid, out) channels of each stage, in the reference code's order: the encoder stage1..6,
# then the decoder stage5d..1d. Heights are fixed by position (7, 6, 5, 4, 4F, 4F, 4F, 4, 5, 6, 7).
FULL = ((3, 32, 64), (64, 32, 128), (128, 64, 256), (256, 128, 512), (512, 256, 512), (512, 256, 512),
        (1024, 256, 512), (1024, 128, 256), (512, 64, 128), (256, 32, 64), (128, 16, 64))
SMALL = ((3, 16, 64),) + ((64, 16, 64),) * 5 + ((128, 16, 64),) * 5
_STAGES = ("stage1", "stage2", "stage3", "stage4", "stage5", "stage6",
           "stage5d", "stage4d", "stage3d", "stage2d", "stage1d")
_HEIGHTS = (7, 6, 5, 4, 4, 4, 4, 4, 5, 6, 7)
_DILATED = {"stage5", "stage6", "stage5d"}


class U2Net(nn.Module):
    """Returns the fused saliency map sigmoid(d0), N×1×H×W; side outputs are training aids."""

    # Made by setattr in __init__ (named after the reference's state dict); declared for the type checker.
    stage1: RSU
    stage2: RSU
    stage3: RSU
    stage4: RSU
    stage5: RSU
    stage6: RSU
    stage5d: RSU
    stage4d: RSU
    stage3d: RSU
    stage2d: RSU
    stage1d: RSU
    side1: nn.Conv2d

    def __init__(self, widths: tuple[tuple[int, int, int], ...] = FULL, out_ch: int = 1):
        super().__init__()
        for name, height, (cin, mid, cout) in zip(_STAGES, _HEIGHTS, widths, strict=True):
            setattr(self, name, RSU(height, cin, mid, cout, dilated=name in _DILATED))
        # side1 reads stage1d, side2 stage2d ... side5 stage5d, side6 stage6.
        side_in = [widths[i][2] for i in (10, 9, 8, 7, 6, 5)]
        for i, cin in enumerate(side_in, start=1):
            setattr(self, f"side{i}", nn.Conv2d(cin, out_ch, 3, padding=1))
        self.outconv = nn.Conv2d(6 * out_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        encoder = [self.stage1, self.stage2, self.stage3, self.stage4, self.stage5, self.stage6]
        skips, hx = [], x
        for depth, stage in enumerate(encoder):
            hx = stage(hx)
            skips.append(hx)
            if depth < len(encoder) - 1:
                hx = _pool(hx)
        decoded = [skips[-1]]  # hx6, then hx5d ... hx1d
        for stage, skip in zip(
            [self.stage5d, self.stage4d, self.stage3d, self.stage2d, self.stage1d],
            reversed(skips[:-1]), strict=True,
        ):
            decoded.append(stage(torch.cat((_upsample_like(decoded[-1], skip), skip), 1)))
        hx1d = decoded[-1]
        sides = [self.side1(hx1d)]
        for i, hx in zip(range(2, 7), reversed(decoded[:-1]), strict=True):
            sides.append(_upsample_like(getattr(self, f"side{i}")(hx), sides[0]))
        return torch.sigmoid(self.outconv(torch.cat(sides, 1)))


def u2net() -> U2Net:
    return U2Net(FULL)


def u2netp() -> U2Net:
    return U2Net(SMALL)
