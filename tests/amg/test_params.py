"""Segment everything's defaults are written once (annotator.amg.params) and read by all."""

import inspect

from annotator.amg import params
from annotator.amg.generator import MaskGenerator
from annotator.app.workbench import AMG_DEFAULTS


def test_mask_generator_defaults_are_the_params_module():
    sig = inspect.signature(MaskGenerator.__init__).parameters
    for name, default in params.DEFAULTS.items():
        assert sig[name].default == default, name


def test_the_app_panel_offers_sams_defaults():
    assert AMG_DEFAULTS == {k: params.DEFAULTS[k] for k in params.APP_PARAMS}
    assert AMG_DEFAULTS["pred_iou_thresh"] == 0.88 and AMG_DEFAULTS["points_per_side"] == 32
