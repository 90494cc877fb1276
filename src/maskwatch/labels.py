"""The class labels, in one place: what the classifier says about a face, and the names data sets use for them.

``with_mask``: a mask covers mouth and nose. ``without_mask``: no mask. ``incorrect_mask``: a mask is worn,
but the nose (or nose and mouth) is uncovered -- it protects no better than none, so it is not compliant.
"""

from __future__ import annotations

WITH_MASK = "with_mask"
WITHOUT_MASK = "without_mask"
INCORRECT_MASK = "incorrect_mask"
LABELS = (WITH_MASK, WITHOUT_MASK, INCORRECT_MASK)

# Names other data sets use for the same classes. The most widely used public mask set (and mask-scenes, which
# keeps its spelling) calls a mask under the nose "mask_weared_incorrect".
LABEL_ALIASES = {
    "mask_weared_incorrect": INCORRECT_MASK,
    "mask_worn_incorrectly": INCORRECT_MASK,
    "incorrect_mask": INCORRECT_MASK,
    "with_mask": WITH_MASK,
    "mask": WITH_MASK,
    "without_mask": WITHOUT_MASK,
    "no_mask": WITHOUT_MASK,
}


def canonical_label(name: str) -> str:
    """The maskwatch label for a data set's class name (unknown names are returned unchanged)."""
    return LABEL_ALIASES.get(name.strip().lower(), name.strip())


def two_class(label: str) -> str:
    """The two-label view (the paper's): a mask worn wrong counts as no mask."""
    return WITHOUT_MASK if label == INCORRECT_MASK else label


def is_compliant(label: str) -> bool:
    return label == WITH_MASK
