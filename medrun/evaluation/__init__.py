"""Metrics, and later test-time augmentation, threshold search and reports."""
