"""Fused attention for SAM's image encoders (ViT, and MobileSAM's TinyViT) and mask decoder.

The official modules write attention out by hand (``softmax(q @ k.T * scale) @ v``), which
materialises the whole attention matrix and runs several unfused kernels. The classes here
compute the same function with ``torch.nn.functional.scaled_dot_product_attention``; they
subclass the official ones (for TinyViT, ours in ``annotator.models.modeling.tinyvit``) and only replace
``forward``, so parameters, state-dict keys and checkpoints are unchanged.
``fuse_attention(model)`` switches a built model over in place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling import image_encoder, transformer

from annotator.models.modeling import tinyvit


class FusedEncoderAttention(image_encoder.Attention):
    """``image_encoder.Attention`` with the decomposed relative-position term passed to SDPA as
    an additive bias (the same numbers the official code adds to the logits)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, _ = x.shape
        qkv = self.qkv(x).reshape(B, H * W, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, B * self.num_heads, H * W, -1).unbind(0)
        bias = None
        if self.use_rel_pos:
            Rh = image_encoder.get_rel_pos(H, H, self.rel_pos_h)
            Rw = image_encoder.get_rel_pos(W, W, self.rel_pos_w)
            r_q = q.reshape(-1, H, W, q.shape[-1])
            rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, Rh)
            rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, Rw)
            bias = (rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).reshape(-1, H * W, H * W)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        x = x.view(B, self.num_heads, H, W, -1).permute(0, 2, 3, 1, 4).reshape(B, H, W, -1)
        return self.proj(x)


class FusedDecoderAttention(transformer.Attention):
    """``transformer.Attention`` (the two-way transformer's) through SDPA."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q = self._separate_heads(self.q_proj(q), self.num_heads)
        k = self._separate_heads(self.k_proj(k), self.num_heads)
        v = self._separate_heads(self.v_proj(v), self.num_heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(self._recombine_heads(out))


class FusedWindowAttention(tinyvit.WindowAttention):
    """TinyViT's (MobileSAM's) window attention through SDPA, its learned bias as the mask."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split_heads(x)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias().to(q.dtype), scale=self.scale)
        return self.merge_heads(out)


_FUSED = {
    image_encoder.Attention: FusedEncoderAttention,
    transformer.Attention: FusedDecoderAttention,
    tinyvit.WindowAttention: FusedWindowAttention,
}


def fuse_attention(model: torch.nn.Module, decoder: bool = True) -> torch.nn.Module:
    """Switch every official attention module in ``model`` to its fused twin, in place."""
    for module in model.modules():
        fused = _FUSED.get(type(module))
        if fused is FusedDecoderAttention and not decoder:
            continue
        if fused is not None:
            module.__class__ = fused
    return model


def unfuse_attention(model: torch.nn.Module) -> torch.nn.Module:
    """Undo ``fuse_attention`` (used to run the official code path on the same weights)."""
    official = {v: k for k, v in _FUSED.items()}
    for module in model.modules():
        if type(module) in official:
            module.__class__ = official[type(module)]
    return model
