"""Stability scores from low-res logits: the counting lives in ``annotator.models.lowres``
(the prompted predictor counts candidate areas with it too, and models sit below amg)."""

from annotator.models.lowres import WINDOW, AxisMap, axis_map, count_above, stability_from_low_res

__all__ = ["WINDOW", "AxisMap", "axis_map", "count_above", "stability_from_low_res"]
