"""The SAM variants the app knows: architecture, official checkpoint, and how to build one.

Each variant is built from ``segment_anything``'s own modeling classes (prompt encoder, mask
decoder and, for vit_h/l/b, the ViT image encoder); MobileSAM's ``vit_t`` swaps in the
TinyViT image encoder from ``annotator.models.modeling.tinyvit``, laid out like the upstream MobileSAM code.
Either way a checkpoint written by the official code loads into our model unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from annotator.models.modeling.tinyvit import TinyViT

IMAGE_SIZE = 1024
PATCH_SIZE = 16
PROMPT_EMBED_DIM = 256
ENCODERS = ("vit", "tinyvit")  # SAM's ViT; MobileSAM's TinyViT


@dataclass(frozen=True)
class SamVariant:
    """One SAM architecture plus the official checkpoint for it (if any).

    ``encoder`` names the image encoder: ``"vit"`` is SAM's ViT, shaped by the ``encoder_*``
    fields; ``"tinyvit"`` is MobileSAM's TinyViT (``annotator.models.modeling.tinyvit.MOBILE_SAM_CONFIG``),
    which has no use for them.
    """

    name: str
    encoder_embed_dim: int | None = None
    encoder_depth: int | None = None
    encoder_num_heads: int | None = None
    encoder_global_attn_indexes: tuple[int, ...] = ()
    url: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    description: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)
    encoder: str = "vit"

    def __post_init__(self):
        if self.encoder not in ENCODERS:
            raise ValueError(f"unknown image encoder {self.encoder!r}; choose one of {', '.join(ENCODERS)}")
        vit_shape = (self.encoder_embed_dim, self.encoder_depth, self.encoder_num_heads)
        if self.encoder == "vit" and None in vit_shape:
            raise ValueError(f"{self.name}: a ViT encoder needs encoder_embed_dim, encoder_depth and encoder_num_heads")

    @property
    def filename(self) -> str | None:
        return self.url.rsplit("/", 1)[-1] if self.url else None

    def build_image_encoder(self) -> torch.nn.Module:
        """This variant's image encoder: (B, 3, 1024, 1024) -> (B, 256, 64, 64)."""
        if self.encoder == "tinyvit":
            return TinyViT(img_size=IMAGE_SIZE, out_chans=PROMPT_EMBED_DIM)
        return ImageEncoderViT(
            depth=self.encoder_depth,
            embed_dim=self.encoder_embed_dim,
            img_size=IMAGE_SIZE,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=self.encoder_num_heads,
            patch_size=PATCH_SIZE,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=self.encoder_global_attn_indexes,
            window_size=14,
            out_chans=PROMPT_EMBED_DIM,
        )

    def build(self) -> Sam:
        """An untrained model of this architecture (weights as PyTorch initialises them)."""
        image_embedding_size = IMAGE_SIZE // PATCH_SIZE
        return Sam(
            image_encoder=self.build_image_encoder(),
            prompt_encoder=PromptEncoder(
                embed_dim=PROMPT_EMBED_DIM,
                image_embedding_size=(image_embedding_size, image_embedding_size),
                input_image_size=(IMAGE_SIZE, IMAGE_SIZE),
                mask_in_chans=16,
            ),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(
                    depth=2,
                    embedding_dim=PROMPT_EMBED_DIM,
                    mlp_dim=2048,
                    num_heads=8,
                ),
                transformer_dim=PROMPT_EMBED_DIM,
                iou_head_depth=3,
                iou_head_hidden_dim=256,
            ),
            pixel_mean=[123.675, 116.28, 103.53],
            pixel_std=[58.395, 57.12, 57.375],
        )


_DL = "https://dl.fbaipublicfiles.com/segment_anything/"

VARIANTS: dict[str, SamVariant] = {
    v.name: v
    for v in (
        SamVariant(
            "vit_h",
            1280,
            32,
            16,
            (7, 15, 23, 31),
            url=_DL + "sam_vit_h_4b8939.pth",
            sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
            size_bytes=2564550879,
            description="SAM ViT-H (636M parameters, best masks, needs a GPU)",
        ),
        SamVariant(
            "vit_l",
            1024,
            24,
            16,
            (5, 11, 17, 23),
            url=_DL + "sam_vit_l_0b3195.pth",
            sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
            size_bytes=1249524607,
            description="SAM ViT-L (308M parameters)",
        ),
        SamVariant(
            "vit_b",
            768,
            12,
            12,
            (2, 5, 8, 11),
            url=_DL + "sam_vit_b_01ec64.pth",
            sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
            size_bytes=375042383,
            description="SAM ViT-B (91M parameters, smallest official SAM)",
        ),
        # MobileSAM: SAM's prompt encoder and mask decoder with a TinyViT image encoder
        # distilled from ViT-H. The file is the one in the MobileSAM repository's weights/
        # folder (unchanged across its commits). No network here to hash it ourselves: the
        # sha256 and size are the values that many independent public projects pin for this
        # file (micro-sam's model registry and changesam's checkpoint check among them, the
        # size in several download manifests); the download check enforces the sha256.
        SamVariant(
            "vit_t",
            encoder="tinyvit",
            url="https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
            sha256="6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
            size_bytes=40728226,
            description="MobileSAM (10M parameters, TinyViT encoder, fast on CPU)",
        ),
    )
}


# Same decoder and prompt encoder as the official models, a much smaller image encoder (still
# windowed + global attention with relative positions): random-weight models for tests,
# benchmarks and load tests (``--model tiny``). No checkpoint exists for it; it is not listed.
TINY = SamVariant(
    "tiny",
    encoder_embed_dim=64,
    encoder_depth=2,
    encoder_num_heads=2,
    encoder_global_attn_indexes=(1,),
    description="test-only tiny SAM (random weights)",
)
UNLISTED_VARIANTS = {TINY.name: TINY}


def get_variant(name: str) -> SamVariant:
    if name in VARIANTS:
        return VARIANTS[name]
    try:
        return UNLISTED_VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(VARIANTS)}") from None
