"""Segment everything's parameters: SAM's names and defaults, written once.

``SamAutomaticMaskGenerator`` defines them; ``MaskGenerator``, the ``annotator auto`` flags
and the app's Segment-everything panel all read them from here. Plain data, so the command
line can list them without importing torch (a test checks them against SAM's signature).
"""

from __future__ import annotations

# name: (SAM's default, what it does)
GENERATOR_PARAMS: dict[str, tuple[object, str]] = {
    "points_per_side": (32, "grid points along one side of the image; points_per_side**2 prompts in all"),
    "points_per_batch": (64, "prompts the decoder runs at once (memory vs speed)"),
    "pred_iou_thresh": (0.88, "drop masks whose predicted IoU is below this"),
    "stability_score_thresh": (0.95, "drop masks whose stability score is below this"),
    "stability_score_offset": (1.0, "logit offset used for the stability score"),
    "box_nms_thresh": (0.7, "box IoU above which non-maximum suppression drops the weaker mask"),
    "crop_n_layers": (0, "layers of image crops to run again on (0: the whole image only)"),
    "crop_nms_thresh": (0.7, "box IoU for suppressing duplicates between crops"),
    "crop_overlap_ratio": (512 / 1500, "overlap of neighbouring crops, as a fraction of the crop size"),
    "crop_n_points_downscale_factor": (1, "points per side shrink by this factor in each crop layer"),
    "min_mask_region_area": (0, "remove holes and islands smaller than this many pixels"),
}

DEFAULTS: dict[str, object] = {name: default for name, (default, _) in GENERATOR_PARAMS.items()}

# The ones the app's panel offers (the rest keep SAM's defaults there).
APP_PARAMS = (
    "points_per_side",
    "points_per_batch",
    "pred_iou_thresh",
    "stability_score_thresh",
    "box_nms_thresh",
    "crop_n_layers",
    "min_mask_region_area",
)
APP_DEFAULTS: dict[str, object] = {name: DEFAULTS[name] for name in APP_PARAMS}
