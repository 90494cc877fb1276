"""Where results go: drawings on images (and, in other modules, JSON lines, video, events)."""

from maskwatch.outputs.annotate import draw_results

__all__ = ["draw_results"]
