"""Scores of CR predictions against truth (histograms, ROC, TPR at fixed FPR) and CR statistics."""
