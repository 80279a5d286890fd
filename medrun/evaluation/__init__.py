"""Scoring: metrics, held-out evaluation, test-time augmentation, threshold search, reports and plots."""
