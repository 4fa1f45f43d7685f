"""Metrics, per-group breakdowns, reports and learning-curve plots for trained models."""
