"""Annotation file formats: COCO, YOLO segmentation, labelme, Pascal VOC; no torch here."""
