"""Losses, epoch loops, callbacks and fit()."""
