"""Clips made once: augmentation, the clip store and journal, the dataset, the folds."""
