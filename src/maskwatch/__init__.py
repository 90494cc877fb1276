"""maskwatch: find every face and tell whether it wears a mask.

    from maskwatch import MaskDetector
    faces = MaskDetector().detect("photo.jpg")
"""

from maskwatch.images import ImageError, load_image
from maskwatch.outputs import draw_results
from maskwatch.pipeline import MaskDetector, detect_masks
from maskwatch.results import WITH_MASK, WITHOUT_MASK, FaceResult, ImageResult

__version__ = "0.1.0"

__all__ = [
    "WITHOUT_MASK",
    "WITH_MASK",
    "FaceResult",
    "ImageError",
    "ImageResult",
    "MaskDetector",
    "__version__",
    "detect_masks",
    "draw_results",
    "load_image",
]
