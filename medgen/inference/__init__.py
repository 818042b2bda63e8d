"""Inference helpers the methods share: whole-volume sliding windows (`windows`) and 2D patch tiling with
per-patch scores (`tiles`)."""
