"""Draws assets/tabletop.jpg, the project's own example image (CC0, like this script).

A seeded synthetic still life with nested objects (a plate holding a donut with a hole,
a mug with a handle, fruit, a notebook with a label), so "click the same pixel again"
has whole / part / sub-part to cycle through. Run: python assets/make_tabletop.py
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

W, H = 1200, 800


def shaded_ellipse(img, center, axes, angle, color, light=(-0.4, -0.5), gloss=0.35):
    """Fill an ellipse with a soft diffuse + specular shading so it reads as a solid."""
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.ellipse(mask, center, axes, angle, 0, 360, 255, -1, cv2.LINE_AA)
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]].astype(np.float32)
    u = (xx - center[0]) / max(axes[0], 1)
    v = (yy - center[1]) / max(axes[1], 1)
    r2 = np.clip(u * u + v * v, 0, 1)
    nz = np.sqrt(1 - r2)
    diffuse = np.clip(0.55 + 0.45 * (nz - light[0] * u - light[1] * v) / 1.6, 0.25, 1.1)
    spec = gloss * np.exp(-((u - light[0] * 0.8) ** 2 + (v - light[1] * 0.8) ** 2) * 18)
    shade = np.clip(np.asarray(color, np.float32)[None, None] * diffuse[..., None] + 255 * spec[..., None], 0, 255)
    a = (mask.astype(np.float32) / 255)[..., None]
    img[:] = (img * (1 - a) + shade * a).astype(np.uint8)


def drop_shadow(img, draw, offset=(14, 18), blur=31, strength=0.45):
    mask = np.zeros(img.shape[:2], np.uint8)
    draw(mask)
    m = np.roll(mask, offset, axis=(0, 1)).astype(np.float32) / 255
    m = cv2.GaussianBlur(m, (blur, blur), 0)[..., None]
    img[:] = (img * (1 - strength * m)).astype(np.uint8)


def main(out: Path) -> None:
    rng = np.random.default_rng(7)
    # wooden table: warm gradient with grain
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    grain = np.sin(yy / 9 + 3 * np.sin(xx / 140) + rng.normal(0, 0.02, (H, W)).cumsum(1) * 0.02)
    base = np.stack([150 + 25 * grain, 100 + 18 * grain, 60 + 10 * grain], -1)
    base += rng.normal(0, 4, (H, W, 1))
    img = np.clip(base * (0.85 + 0.15 * (1 - yy / H))[..., None], 0, 255).astype(np.uint8)

    # notebook (rotated rectangle) with a paper label
    book = cv2.boxPoints(((930, 560), (330, 240), -12)).astype(np.int32)
    drop_shadow(img, lambda m: cv2.fillPoly(m, [book], 255, cv2.LINE_AA))
    cv2.fillPoly(img, [book], (40, 70, 140), cv2.LINE_AA)
    label = cv2.boxPoints(((920, 545), (150, 70), -12)).astype(np.int32)
    cv2.fillPoly(img, [label], (235, 228, 210), cv2.LINE_AA)
    for k in range(3):
        ln = cv2.boxPoints(((918 + 2 * k, 528 + 16 * k), (110 - 25 * k, 5), -12)).astype(np.int32)
        cv2.fillPoly(img, [ln], (90, 90, 90), cv2.LINE_AA)

    # plate > donut > hole (the table shows through)
    drop_shadow(img, lambda m: cv2.ellipse(m, (360, 420), (250, 200), 0, 0, 360, 255, -1))
    shaded_ellipse(img, (360, 420), (250, 200), 0, (232, 232, 226), gloss=0.15)
    shaded_ellipse(img, (360, 420), (205, 160), 0, (214, 214, 210), gloss=0.05)
    drop_shadow(img, lambda m: cv2.ellipse(m, (360, 410), (130, 105), 0, 0, 360, 255, -1), (8, 10), 21)
    shaded_ellipse(img, (360, 410), (130, 105), 0, (196, 140, 80), gloss=0.2)
    shaded_ellipse(img, (352, 398), (112, 88), 0, (235, 120, 170), gloss=0.3)  # icing
    for _ in range(40):  # sprinkles
        a, r = rng.uniform(0, 2 * np.pi), rng.uniform(55, 100)
        p = (int(352 + r * np.cos(a)), int(398 + 0.78 * r * np.sin(a)))
        d = rng.uniform(0, np.pi)
        q = (int(p[0] + 7 * np.cos(d)), int(p[1] + 7 * np.sin(d)))
        cv2.line(img, p, q, [(250, 240, 90), (90, 200, 250), (255, 255, 255)][_ % 3], 3, cv2.LINE_AA)
    hole = np.zeros((H, W), np.uint8)
    cv2.ellipse(hole, (360, 412), (38, 30), 0, 0, 360, 255, -1, cv2.LINE_AA)
    plate_only = img.copy()
    shaded_ellipse(plate_only, (360, 420), (205, 160), 0, (214, 214, 210), gloss=0.05)
    a = (hole.astype(np.float32) / 255)[..., None]
    img[:] = (img * (1 - a) + plate_only * a).astype(np.uint8)

    # mug with a handle, seen from above
    drop_shadow(img, lambda m: cv2.circle(m, (900, 210), 115, 255, -1))
    cv2.ellipse(img, (1025, 215), (55, 40), 0, -70, 70, (200, 60, 50), 22, cv2.LINE_AA)
    shaded_ellipse(img, (900, 210), (115, 115), 0, (205, 65, 55), gloss=0.3)
    shaded_ellipse(img, (900, 210), (92, 92), 0, (70, 40, 25), gloss=0.15)  # coffee

    # fruit
    for (cx, cy), rad, col in [
        ((130, 700), 70, (220, 180, 40)),
        ((250, 730), 58, (120, 170, 40)),
        ((640, 700), 64, (210, 70, 30)),
    ]:
        drop_shadow(img, lambda m, cx=cx, cy=cy, rad=rad: cv2.circle(m, (cx, cy), rad, 255, -1), (10, 12), 25)
        shaded_ellipse(img, (cx, cy), (rad, rad), 0, col, gloss=0.4)
        cv2.line(img, (cx, cy - rad + 6), (cx + 8, cy - rad - 12), (80, 55, 30), 5, cv2.LINE_AA)

    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])


if __name__ == "__main__":
    main(Path(__file__).with_name("tabletop.jpg"))
