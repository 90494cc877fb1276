"""maskwatch: find every face and tell whether it wears a mask.

    from maskwatch import MaskDetector
    faces = MaskDetector().detect("photo.jpg")
"""

from maskwatch.images import ImageError, load_image
from maskwatch.labels import INCORRECT_MASK, LABELS, WITH_MASK, WITHOUT_MASK
from maskwatch.model_files import ModelFileError
from maskwatch.options import Options
from maskwatch.outputs import draw_results
from maskwatch.pipeline import MaskDetector, detect_masks
from maskwatch.results import FaceResult, ImageResult

__version__ = "0.1.0"

__all__ = [
    "INCORRECT_MASK",
    "LABELS",
    "WITHOUT_MASK",
    "WITH_MASK",
    "FaceResult",
    "ImageError",
    "ImageResult",
    "MaskDetector",
    "ModelFileError",
    "Options",
    "__version__",
    "detect_masks",
    "draw_results",
    "load_image",
]
