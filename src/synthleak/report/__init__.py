"""HTML report: metrics table, ROC curves, score histograms, and visual evidence."""
from .html import write_report

__all__ = ["write_report"]
