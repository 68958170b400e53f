"""Loading and running the segmentation models."""
