"""TinyViT, the image encoder of MobileSAM (``vit_t``), for inference.

MobileSAM keeps SAM's prompt encoder and mask decoder and replaces the ViT image encoder with
a 5M-parameter TinyViT distilled from SAM's ViT-H: a convolutional stem, one stage of
MBConv blocks, then three stages of windowed attention blocks, and SAM's neck on top, giving
the same (256, 64, 64) embedding the decoder expects.

Module names and parameter shapes follow the upstream MobileSAM code exactly, so the official
``mobile_sam.pt`` loads with a strict state-dict check. Training-only machinery (drop path,
gradient checkpointing, layer-wise learning-rate decay) is left out: it has no parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from torch import nn

# MobileSAM's configuration: TinyViT-5M at 1024x1024. The last patch merging keeps the
# 64x64 resolution (stride 1) so the output grid matches SAM's 16-pixel patches.
MOBILE_SAM_CONFIG = dict(
    embed_dims=(64, 128, 160, 320),
    depths=(2, 2, 6, 2),
    num_heads=(2, 4, 5, 10),
    window_sizes=(7, 7, 14, 7),
    merge_strides=(2, 2, 1),
)


class ConvBN(nn.Sequential):
    """Conv2d without bias followed by BatchNorm2d (children named ``c`` and ``bn``)."""

    def __init__(
        self, in_chans: int, out_chans: int, kernel_size: int = 1, stride: int = 1, padding: int = 0, groups: int = 1
    ):
        super().__init__()
        self.add_module("c", nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(out_chans))


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 convolutions: (B, 3, S, S) -> (B, dim, S/4, S/4)."""

    def __init__(self, in_chans: int, embed_dim: int):
        super().__init__()
        self.seq = nn.Sequential(
            ConvBN(in_chans, embed_dim // 2, 3, 2, 1),
            nn.GELU(),
            ConvBN(embed_dim // 2, embed_dim, 3, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, 3x3 depthwise, 1x1 project, residual, GELU."""

    def __init__(self, dim: int, expand_ratio: float = 4.0):
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden)
        self.act1 = nn.GELU()
        self.conv2 = ConvBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = ConvBN(hidden, dim)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.conv1(x))
        y = self.act2(self.conv2(y))
        y = self.conv3(y)
        return self.act3(y + x)


class PatchMerging(nn.Module):
    """Change width (and halve the resolution when ``stride`` is 2); returns tokens (B, L, C)."""

    def __init__(self, resolution: tuple[int, int], dim: int, out_dim: int, stride: int):
        super().__init__()
        self.resolution = resolution
        self.act = nn.GELU()
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:  # tokens from an attention stage -> feature map
            H, W = self.resolution
            x = x.view(len(x), H, W, -1).permute(0, 3, 1, 2)
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        x = self.conv3(x)
        return x.flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    """Pre-norm two-layer MLP with GELU."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


def relative_offset_index(height: int, width: int) -> torch.Tensor:
    """(N, N) index of the learned bias for each pair of positions in a window, N = h*w.

    The bias depends only on the absolute offset (|dy|, |dx|) between the two positions;
    offset (dy, dx) is column ``dy * width + dx`` of ``attention_biases``, the order in which
    the upstream code first meets each offset.
    """
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    dy = (ys[:, None] - ys[None, :]).abs()
    dx = (xs[:, None] - xs[None, :]).abs()
    return dy * width + dx


class WindowAttention(nn.Module):
    """Pre-norm multi-head self-attention inside one window, with a learned bias per head
    and relative offset. Written out by hand, the same operations as upstream;
    ``annotator.models.modeling.attention.fuse_attention`` swaps in a scaled_dot_product_attention twin."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, resolution: tuple[int, int]):
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.value_dim = key_dim  # attn_ratio 1 in every TinyViT block
        self.scale = key_dim**-0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, num_heads * (2 * key_dim + self.value_dim))
        self.proj = nn.Linear(num_heads * self.value_dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution[0] * resolution[1]))
        self.register_buffer("attention_bias_idxs", relative_offset_index(*resolution), persistent=False)

    def bias(self) -> torch.Tensor:
        """(heads, N, N) additive attention bias, gathered from the learned table."""
        return self.attention_biases[:, self.attention_bias_idxs]

    def split_heads(self, x: torch.Tensor):
        B, N, _ = x.shape
        q, k, v = (
            self.qkv(self.norm(x))
            .view(B, N, self.num_heads, -1)
            .split([self.key_dim, self.key_dim, self.value_dim], dim=3)
        )
        return q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, _, N, _ = x.shape
        return self.proj(x.transpose(1, 2).reshape(B, N, self.num_heads * self.value_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (windows, N, C)
        q, k, v = self.split_heads(x)
        attn = (q @ k.transpose(-2, -1)) * self.scale + self.bias()
        return self.merge_heads(attn.softmax(dim=-1) @ v)


class TinyViTBlock(nn.Module):
    """Windowed attention, a depthwise 3x3 conv mixing across windows, then an MLP."""

    def __init__(
        self,
        dim: int,
        resolution: tuple[int, int],
        num_heads: int,
        window_size: int,
        mlp_ratio: float = 4.0,
        local_conv_size: int = 3,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.resolution = resolution
        self.window_size = window_size
        self.attn = WindowAttention(dim, dim // num_heads, num_heads, (window_size, window_size))
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = ConvBN(dim, dim, local_conv_size, 1, local_conv_size // 2, groups=dim)

    def windowed_attention(self, x: torch.Tensor) -> torch.Tensor:
        H, W = self.resolution
        B, _, C = x.shape
        ws = self.window_size
        x = x.view(B, H, W, C)
        pad_b, pad_r = -H % ws, -W % ws
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        pH, pW = H + pad_b, W + pad_r
        nH, nW = pH // ws, pW // ws
        windows = x.view(B, nH, ws, nW, ws, C).transpose(2, 3).reshape(B * nH * nW, ws * ws, C)
        windows = self.attn(windows)
        x = windows.view(B, nH, nW, ws, ws, C).transpose(2, 3).reshape(B, pH, pW, C)
        if pad_b or pad_r:
            x = x[:, :H, :W].contiguous()
        return x.view(B, H * W, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H*W, C)
        H, W = self.resolution
        B, L, C = x.shape
        if L != H * W:
            raise ValueError(f"expected {H}x{W} tokens, got {L}")
        x = x + self.windowed_attention(x)
        x = self.local_conv(x.transpose(1, 2).reshape(B, C, H, W))
        x = x.view(B, C, L).transpose(1, 2)
        return x + self.mlp(x)


class ConvLayer(nn.Module):
    """Stage 0: MBConv blocks on the feature map, then patch merging to tokens."""

    def __init__(self, dim, resolution, depth, out_dim, stride, expand_ratio: float = 4.0):
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = PatchMerging(resolution, dim, out_dim, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x)


class BasicLayer(nn.Module):
    """Stages 1-3: TinyViT blocks on tokens, then patch merging (except the last stage)."""

    def __init__(
        self, dim, resolution, depth, num_heads, window_size, out_dim=None, stride=None, mlp_ratio: float = 4.0
    ):
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, resolution, num_heads, window_size, mlp_ratio) for _ in range(depth)
        )
        self.downsample = PatchMerging(resolution, dim, out_dim, stride) if out_dim else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class TinyViT(nn.Module):
    """TinyViT image encoder with SAM's neck: (B, 3, S, S) -> (B, out_chans, S/16, S/16)."""

    def __init__(
        self,
        img_size: int = 1024,
        in_chans: int = 3,
        embed_dims=MOBILE_SAM_CONFIG["embed_dims"],
        depths=MOBILE_SAM_CONFIG["depths"],
        num_heads=MOBILE_SAM_CONFIG["num_heads"],
        window_sizes=MOBILE_SAM_CONFIG["window_sizes"],
        merge_strides=MOBILE_SAM_CONFIG["merge_strides"],
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        num_classes: int = 1000,
    ):
        super().__init__()
        if not len(embed_dims) == len(depths) == len(num_heads) == len(window_sizes) == len(merge_strides) + 1:
            raise ValueError(
                "embed_dims, depths, num_heads and window_sizes need one entry per stage, merge_strides one fewer"
            )
        self.img_size = img_size
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        side = img_size // 4
        self.layers = nn.ModuleList()
        for i, (dim, depth) in enumerate(zip(embed_dims, depths)):
            resolution = (side, side)
            last = i == len(embed_dims) - 1
            out_dim = None if last else embed_dims[i + 1]
            stride = None if last else merge_strides[i]
            if i == 0:
                layer = ConvLayer(dim, resolution, depth, out_dim, stride)
            else:
                layer = BasicLayer(dim, resolution, depth, num_heads[i], window_sizes[i], out_dim, stride, mlp_ratio)
            self.layers.append(layer)
            if not last:
                side = (side - 1) // stride + 1  # 3x3 conv, padding 1
        self.out_resolution = (side, side)
        # The ImageNet classifier TinyViT was pre-trained with. SAM never runs it, but the
        # official checkpoint holds its weights, so it stays for a strict layout check.
        self.norm_head = nn.LayerNorm(embed_dims[-1])
        self.head = nn.Linear(embed_dims[-1], num_classes)
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        H, W = self.out_resolution
        x = x.view(len(x), H, W, -1).permute(0, 3, 1, 2)
        return self.neck(x)
