"""Overlays: per-package rules layered over what the index serves."""
