"""Readers, images, splits, caching and augmentation for labelled face folders."""
