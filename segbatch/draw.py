"""Drawing detections on their image: filled masks, outlines, boxes and labels."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from segbatch.workers.results import Detection

MASK_OPACITY = 0.45
OUTLINE_PX = 2
LABEL_SCALE = 0.5

# Distinct colours, one per class id (cycled), RGB.
PALETTE_RGB = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
)


def draw_detections(
    image_rgb: np.ndarray, detections: Sequence[Detection]
) -> np.ndarray:
    """A copy of ``image_rgb`` with every detection drawn on it."""
    canvas = image_rgb.copy()
    overlay = image_rgb.copy()
    for detection in detections:
        color = PALETTE_RGB[detection.class_id % len(PALETTE_RGB)]
        mask = np.zeros(image_rgb.shape[:2], np.uint8)
        for ring, hole in zip(detection.polygons, detection.polygon_holes, strict=True):
            cv2.fillPoly(mask, [np.round(ring).astype(np.int32)], 0 if hole else 1)
        overlay[mask.astype(bool)] = color
    canvas = cv2.addWeighted(overlay, MASK_OPACITY, canvas, 1 - MASK_OPACITY, 0)

    for detection in detections:
        color = PALETTE_RGB[detection.class_id % len(PALETTE_RGB)]
        rings = [np.round(ring).astype(np.int32) for ring in detection.polygons]
        cv2.polylines(canvas, rings, True, color, OUTLINE_PX, cv2.LINE_AA)
        x1, y1, x2, y2 = (round(float(v)) for v in detection.box_xyxy)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, 1, cv2.LINE_AA)
        label = f"{detection.class_name} {detection.score:.2f}"
        (text_w, text_h), baseline = cv2.getTextSize(
            label, cv2.FONT_HERSHEY_SIMPLEX, LABEL_SCALE, 1
        )
        top = max(y1 - text_h - baseline - 2, 0)
        cv2.rectangle(
            canvas, (x1, top), (x1 + text_w + 4, top + text_h + baseline + 2), color, -1
        )
        cv2.putText(
            canvas,
            label,
            (x1 + 2, top + text_h + 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            LABEL_SCALE,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
    return canvas
