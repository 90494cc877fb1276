"""What a mask looks like -- dark, patterned or plain -- read from the lower face of a crop.

Users report that black and patterned masks are missed. The test split has both
(black masks are a quarter of its masked faces), so the report splits masked-face
recall by appearance instead of hiding them in one average. The rule is simple and
stated: it looks at the mouth-and-chin region of the crop, where a mask is.
"""

from __future__ import annotations

import cv2
import numpy as np

from maskwatch.crops import DEFAULT_MARGIN, face_in_crop

APPEARANCES = ("dark", "patterned", "plain")
# Median luminance (0-255) of the region below this: a dark mask. Bare faces' lower halves almost never are
# (1 of 386 bare test faces, against 90 of 433 masked ones).
DARK_LUMINANCE = 60
# Standard deviation of the region's Laplacian at or above this: print, plaid, lace (bare faces' 90th percentile
# is 29, mostly beards and teeth).
PATTERN_LAPLACIAN = 30.0


def lower_face(crop: np.ndarray, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """Mouth and chin: rows 68-90 % and columns 30-70 % of the face box inside a square face crop."""
    lo, inner = face_in_crop(crop.shape[0], margin)
    return crop[int(lo + 0.68 * inner):int(lo + 0.9 * inner), int(lo + 0.3 * inner):int(lo + 0.7 * inner)]


def mask_appearance(crop: np.ndarray, margin: float = DEFAULT_MARGIN) -> str:
    """"dark", "patterned" or "plain", from the lower face of a BGR face crop."""
    gray = cv2.cvtColor(lower_face(crop, margin), cv2.COLOR_BGR2GRAY)
    if np.median(gray) < DARK_LUMINANCE:
        return "dark"
    if float(cv2.Laplacian(gray, cv2.CV_32F).std()) >= PATTERN_LAPLACIAN:
        return "patterned"
    return "plain"
