"""SAM's mask decoder bound to one image embedding, laid out for a CPU.

For prompts on one image, much of what ``MaskDecoder`` computes for each prompt is the same
for every prompt or can be reordered to be much smaller. ``EmbeddingDecoder`` computes the same
function as ``sam.mask_decoder`` (to float rounding) for a batch of prompts on one image, any
prompts (points, a box, a mask fed back), with:

- per image, once, for prompts with no mask fed back (a first click; every point of "segment
  everything"): the image tokens plus the "no mask" dense embedding, and in the first two-way
  block the key/value projections of the image tokens (token-to-image attention) and their
  query projection (image-to-token attention): their inputs are identical for every prompt;
- attention with the projections folded onto the few prompt tokens instead of the 4096 image
  tokens. Token-to-image: ``(q Wk) k_in^T`` replaces ``q (k_in Wk^T + bk)^T`` (the bias term
  is constant along the keys, so softmax ignores it) and ``(P v_in) Wv^T + bv`` replaces
  ``P (v_in Wv^T + bv)`` (rows of P sum to 1). Image-to-token: the query projection is folded
  into the token keys and the output projection into the token values. Each cuts a
  4096 x 256 x 128 projection per prompt to a 4096 x 256 x (8 x tokens) product;
- the transposed convolutions of the upscaling head as matrix products in channels-last
  layout, for the mask outputs asked for only, and (in "segment everything") only for points
  whose masks can pass the predicted-IoU filter (the IoU head does not depend on the
  upscaling).

The app's clicks (``SamSegmenter``) and "segment everything" (``annotator.amg``) both decode
through it, whatever runtime runs the image encoder.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.modeling.transformer import Attention


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(..., N, H*d) -> (..., H, N, d)"""
    *lead, n, c = x.shape
    return x.reshape(*lead, n, num_heads, c // num_heads).transpose(-3, -2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(..., H, N, d) -> (..., N, H*d)"""
    *lead, h, n, d = x.shape
    return x.transpose(-3, -2).reshape(*lead, n, h * d)


def _token_to_image(attn: Attention, tokens: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor):
    """``attn(q=tokens, k=k_in, v=v_in)`` for few tokens (B, T, C) attending to many image
    tokens (B, N, C), with the key/value projections moved onto the tokens."""
    b, t, c = tokens.shape
    h = attn.num_heads
    dh = attn.internal_dim // h
    q = _heads(attn.q_proj(tokens), h)  # (B, H, T, dh)
    wk = attn.k_proj.weight.view(h, dh, c)
    # (B, H*T, C); the q.bk term is constant along the keys, so softmax ignores it
    g = (q @ wk).reshape(b, h * t, c) * (1 / math.sqrt(dh))
    logits = torch.bmm(g, k_in.transpose(1, 2))  # (B, H*T, N)
    p = torch.softmax(logits, dim=-1)
    z = torch.bmm(p, v_in).view(b, h, t, c)  # rows of p sum to 1, so the v bias passes through
    wv = attn.v_proj.weight.view(h, dh, c)
    out = z @ wv.transpose(1, 2) + attn.v_proj.bias.view(h, 1, dh)  # (B, H, T, dh)
    return attn.out_proj(_merge_heads(out))


def _image_to_token(attn: Attention, q_in, tokens_k, tokens_v, residual, shared_q=None):
    """``residual + attn(q=q_in, k=tokens_k, v=tokens_v)`` for many image tokens (B, N, C)
    attending to few tokens (B, T, C): the query projection is folded into the token keys, the
    output projection into the token values. ``shared_q`` is the already projected (H, dh, N)
    query when it is the same for the whole batch; then ``q_in`` is unused."""
    b, t, c = tokens_k.shape
    h = attn.num_heads
    dh = attn.internal_dim // h
    k = _heads(attn.k_proj(tokens_k), h) * (1 / math.sqrt(dh))  # (B, H, T, dh)
    v = _heads(attn.v_proj(tokens_v), h)
    # logits laid out (B, H, T, N): the softmax over T then runs along a strided axis, which
    # PyTorch vectorises across N (a softmax over a last axis of 7 is slow)
    if shared_q is not None:
        logits = k @ shared_q  # (B, H, T, N)
    else:
        wq = attn.q_proj.weight.view(h, dh, c)
        m = (k @ wq).reshape(b, h * t, c)  # (B, H*T, C)
        bias = (k @ attn.q_proj.bias.view(h, dh, 1)).reshape(b, h * t, 1)
        logits = torch.baddbmm(bias, m, q_in.transpose(1, 2)).view(b, h, t, -1)
    p = torch.softmax(logits, dim=2).view(b, h * t, -1)  # (B, H*T, N)
    wo = attn.out_proj.weight.view(c, h, dh).permute(1, 2, 0)  # (H, dh, C)
    # Each head's weights over T sum to 1, so adding bias / H to every head's rows of u adds
    # the output bias once to every image token.
    u = (v @ wo + attn.out_proj.bias / h).reshape(b, h * t, c)  # (B, H*T, C)
    return torch.baddbmm(residual, p.transpose(1, 2), u)


def sparse_embeddings(prompt_encoder, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``PromptEncoder``'s embedding (B, N, C) of points and box corners (B, N, 2) in the
    encoder's frame, labelled 1 / 0 (positive / negative point), 2 / 3 (a box's corners) or -1
    (padding; the caller adds the one ``PromptEncoder`` adds when there is no box)."""
    emb = prompt_encoder.pe_layer.forward_with_coords(coords + 0.5, prompt_encoder.input_image_size)
    emb = torch.where((labels == -1)[..., None], prompt_encoder.not_a_point_embed.weight, emb)
    for i, table in enumerate(prompt_encoder.point_embeddings):
        emb = emb + table.weight * (labels == i)[..., None]
    return emb


MULTIMASK = (1, 2, 3)  # the mask tokens of the three candidates of an ambiguous prompt
SINGLE = (0,)  # the single-mask token (refined and box prompts)


class EmbeddingDecoder:
    """Mask predictions for batches of prompts on one image embedding.

    ``decode(sparse, dense, outputs)`` returns what ``sam.mask_decoder(features, pe, sparse,
    dense, multimask_output=...)`` returns, to float rounding: low-res mask logits
    (B, len(outputs), 256, 256) and predicted IoUs (B, len(outputs)) of the mask tokens
    ``outputs`` (``MULTIMASK`` or ``SINGLE``). ``dense`` None is the "no mask" embedding,
    whose per-image work is done once, on first use, and kept.
    """

    def __init__(self, model: Sam, features: torch.Tensor):
        self.model = model
        dec = model.mask_decoder
        tr = dec.transformer
        if tr.depth < 1 or dec.num_mask_tokens != 4 or any(m.sigmoid_output for m in dec.output_hypernetworks_mlps):
            raise ValueError("EmbeddingDecoder expects SAM's mask decoder: a two-way transformer, 4 mask tokens")
        self.features = features  # (1, C, h, w)
        self.embedding_hw = tuple(features.shape[-2:])
        self.pe = model.prompt_encoder.get_dense_pe().flatten(2).transpose(1, 2).to(features.dtype)  # (1, N, C)
        self._shared: tuple | None = None
        self._hyper: dict[tuple[int, ...], list] = {}  # outputs -> their stacked hypernetwork MLPs
        self.output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        up = dec.output_upscaling
        conv1, ln, conv2 = up[0], up[1], up[3]
        # ConvTranspose2d(k=2, s=2) is a per-pixel linear map to a 2x2 block: as matrices with
        # columns ordered (sub-pixel, channel) so the channel stays the fastest axis.
        self.w1 = conv1.weight.permute(0, 2, 3, 1).reshape(conv1.in_channels, -1)
        self.b1 = conv1.bias.repeat(4)
        self.ln = ln
        self.w2 = conv2.weight.permute(0, 2, 3, 1).reshape(conv2.in_channels, -1)
        self.b2 = conv2.bias.repeat(4)
        self.c1 = conv1.out_channels
        self.c2 = conv2.out_channels

    def _hyper_layers(self, outputs: tuple[int, ...]) -> list:
        """The hypernetwork MLPs of the mask tokens ``outputs`` as one batched MLP (stacked
        once per set of outputs, not per call)."""
        if outputs not in self._hyper:
            mlps = [self.model.mask_decoder.output_hypernetworks_mlps[i] for i in outputs]
            self._hyper[outputs] = [
                (
                    torch.stack([m.layers[k].weight.t() for m in mlps]),  # (M, in, out)
                    torch.stack([m.layers[k].bias for m in mlps]).unsqueeze(1),  # (M, 1, out)
                )
                for k in range(mlps[0].num_layers)
            ]
        return self._hyper[outputs]

    def shared(self) -> tuple:
        """The first block's image side with no mask fed back, the same for every prompt:
        (keys (1, N, C), token-to-image keys and values (1, H, N, dh), image-to-token
        queries (H, dh, N)); computed on first use."""
        if self._shared is None:
            first = self.model.mask_decoder.transformer.layers[0]
            t2i, i2t = first.cross_attn_token_to_image, first.cross_attn_image_to_token
            no_mask = self.model.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
            keys0 = (self.features + no_mask).flatten(2).transpose(1, 2)  # (1, N, C)
            keys_pe = keys0 + self.pe
            k0 = _heads(t2i.k_proj(keys_pe), t2i.num_heads)  # (1, H, N, dh)
            v0 = _heads(t2i.v_proj(keys0), t2i.num_heads)
            q0 = _heads(i2t.q_proj(keys_pe), i2t.num_heads)[0].transpose(1, 2)  # (H, dh, N)
            self._shared = (keys0, k0, v0, q0)
        return self._shared

    # -- transformer ------------------------------------------------------------------------
    def transformer(self, sparse: torch.Tensor, dense: torch.Tensor | None = None):
        """Two-way transformer for prompts (B, P, C) and their dense embeddings (B, C, h, w;
        None: no mask fed back) -> (tokens out (B, T, C), keys (B, N, C))."""
        tr = self.model.mask_decoder.transformer
        b = sparse.shape[0]
        tokens = torch.cat([self.output_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
        query_pe = tokens
        queries = tokens
        shared = self.shared() if dense is None else None
        keys = None if dense is None else (self.features + dense).flatten(2).transpose(1, 2).contiguous()
        for i, layer in enumerate(tr.layers):
            if layer.skip_first_layer_pe:
                queries = layer.norm1(layer.self_attn(q=queries, k=queries, v=queries))
            else:
                q = queries + query_pe
                queries = layer.norm1(queries + layer.self_attn(q=q, k=q, v=queries))
            t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
            q = queries + query_pe
            if i == 0 and shared is not None:
                # shared keys/values: the batch's queries go in as one longer sequence
                keys0, k0, v0, q0 = shared
                qh = _heads(t2i.q_proj(q), t2i.num_heads)  # (B, H, T, dh)
                hq, t, dh = qh.shape[1:]
                qh = qh.transpose(0, 1).reshape(1, hq, b * t, dh)
                o = F.scaled_dot_product_attention(qh, k0, v0)
                o = o.reshape(hq, b, t, dh).transpose(0, 1)
                attn_out = t2i.out_proj(_merge_heads(o))
            else:
                keys_pe = keys + self.pe
                attn_out = _token_to_image(t2i, q, keys_pe, keys)
            queries = layer.norm2(queries + attn_out)
            queries = layer.norm3(queries + layer.mlp(queries))
            k_tok = queries + query_pe
            if i == 0 and shared is not None:
                keys = _image_to_token(i2t, None, k_tok, queries, keys0, shared_q=q0)
            else:
                keys = _image_to_token(i2t, keys_pe, k_tok, queries, keys)
            keys = layer.norm4(keys)
        attn_out = _token_to_image(tr.final_attn_token_to_image, queries + query_pe, keys + self.pe, keys)
        queries = tr.norm_final_attn(queries + attn_out)
        return queries, keys

    def iou(self, tokens_out: torch.Tensor, outputs: tuple[int, ...] = MULTIMASK) -> torch.Tensor:
        """Predicted IoU of the mask tokens ``outputs``, (B, len(outputs))."""
        return self.model.mask_decoder.iou_prediction_head(tokens_out[:, 0])[:, list(outputs)]

    # -- masks ------------------------------------------------------------------------------
    def masks(
        self,
        tokens_out: torch.Tensor,
        keys: torch.Tensor,
        outputs: tuple[int, ...] = MULTIMASK,
        transpose: bool = False,
    ) -> torch.Tensor:
        """Low-res logits (B, M, 4h, 4w) of the mask tokens ``outputs`` (M of them);
        ``transpose`` gives each map transposed (B, M, 4w, 4h) at no extra cost."""
        b, n, c = keys.shape
        h, w = self.embedding_hw
        m = len(outputs)
        # the tokens' hypernetwork MLPs as one batched MLP: (M, B, C) -> (M, B, c2)
        x = tokens_out[:, [1 + i for i in outputs]].transpose(0, 1)
        layers = self._hyper_layers(outputs)
        for i, (weight, bias) in enumerate(layers):
            x = torch.baddbmm(bias, x, weight)
            if i < len(layers) - 1:
                x = torch.relu(x)
        hyper = x.transpose(0, 1)  # (B, M, c2)
        z = torch.addmm(self.b1, keys.reshape(b * n, c), self.w1).view(b, n * 4, self.c1)
        z = F.gelu(F.layer_norm(z, (self.c1,), self.ln.weight, self.ln.bias, self.ln.eps))
        z = F.gelu(torch.addmm(self.b2, z.view(-1, self.c1), self.w2))
        # (B, N*16, c2) @ (B, c2, M): the logits in (i, j, a, b, a2, b2) block order
        logits = torch.bmm(z.view(b, n * 16, self.c2), hyper.transpose(1, 2))
        logits = logits.view(b, h, w, 2, 2, 2, 2, m)
        # row = 4i + 2a + a2, col = 4j + 2b + b2
        order = (0, 7, 2, 4, 6, 1, 3, 5) if transpose else (0, 7, 1, 3, 5, 2, 4, 6)
        return logits.permute(*order).reshape(b, m, 4 * h, 4 * w)

    def decode(self, sparse: torch.Tensor, dense: torch.Tensor | None = None, outputs: tuple[int, ...] = MULTIMASK):
        """(low-res logits (B, M, 256, 256), predicted IoU (B, M)) like the official decoder."""
        tokens_out, keys = self.transformer(sparse, dense)
        return self.masks(tokens_out, keys, outputs), self.iou(tokens_out, outputs)
