"""Views of a face crop for training (random) and for evaluation by face size (fixed).

Why these: the training folders are mostly large, sharp crops, while cameras see
small, blurry, JPEG-compressed faces. Random shrinking and JPEG re-encoding of
*every* crop also hide the data set's shortcuts (PNG and tiny files are nearly
all ``with_mask``), so only the face can decide.
"""

from __future__ import annotations

import cv2
import numpy as np

from maskwatch.crops import DEFAULT_MARGIN, face_in_crop

# Face heights (px) at which evaluation views are made: the crop is shrunk to the
# size it would have around such a face, then enlarged to the model input.
EVAL_FACE_SIZES = (16, 24, 32, 48)
# Training shrinks crops to faces of this many pixels (and back) half of the time.
TRAIN_FACE_SIZE_RANGE = (14, 48)


def resize_to(crop: np.ndarray, size: int) -> np.ndarray:
    if crop.shape[0] == size:
        return crop
    interpolation = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interpolation)


def as_small_face(crop: np.ndarray, face_px: float, out_size: int, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """The crop as it looks when the face is only ``face_px`` high: shrink, then enlarge back."""
    side = max(4, round(face_px * (1 + 2 * margin)))
    small = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (out_size, out_size), interpolation=cv2.INTER_LINEAR)


def jpeg(crop: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR) if ok else None
    return crop if decoded is None else np.asarray(decoded)


def replace_surround(view: np.ndarray, rng: np.random.Generator, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """Keep the face (the crop's centre) and replace the margin around it.

    In the training folders, bare faces are mostly tight crops (their margin is
    repeated border pixels) while masked faces come with real surroundings: a
    model would learn "real background means mask". Giving both classes every
    kind of surround -- repeated border, a blurred scene, a flat colour -- leaves
    the face as the only clue.
    """
    size = view.shape[0]
    inner = round(size / (1 + 2 * margin))
    lo, hi = (size - inner) // 2, (size - inner) // 2 + inner
    face = view[lo:hi, lo:hi]
    kind = rng.integers(3)
    if kind == 0:
        surround = cv2.copyMakeBorder(face, lo, size - hi, lo, size - hi, cv2.BORDER_REPLICATE)
    elif kind == 1:
        surround = cv2.GaussianBlur(view, (0, 0), size / 10)
    else:
        surround = np.empty_like(view)
        surround[:] = rng.integers(0, 256, size=3, dtype=np.uint8)
    surround[lo:hi, lo:hi] = face
    return surround


def occlude_lower_face(view: np.ndarray, rng: np.random.Generator, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """Cover mouth and chin with a skin-coloured, hand-like shape: a bare face behind a hand is not masked.

    Users report that a hand over the mouth is read as a mask; the training folders have no such face.
    The colour comes from the face's own cheeks, so the model cannot learn "odd colour means hand".
    """
    size = view.shape[0]
    lo, inner = face_in_crop(size, margin)
    cheek = view[int(lo + 0.45 * inner):int(lo + 0.6 * inner), int(lo + 0.2 * inner):int(lo + 0.8 * inner)]
    colour = np.median(cheek.reshape(-1, 3), axis=0) * rng.uniform(0.85, 1.1)
    alpha: np.ndarray = np.zeros((size, size), np.float32)
    cx = size / 2 + rng.uniform(-0.1, 0.1) * inner
    cy = lo + rng.uniform(0.68, 0.85) * inner
    palm = (int(rng.uniform(0.22, 0.34) * inner), int(rng.uniform(0.12, 0.2) * inner))
    angle = rng.uniform(-35, 35)
    cv2.ellipse(alpha, (int(cx), int(cy)), palm, angle, 0, 360, 1.0, -1)
    if rng.random() < 0.7:  # fingers: a row of narrow ellipses along one side of the palm
        side = rng.choice([-1, 1])
        for k in range(int(rng.integers(3, 5))):
            fx = cx + (k - 1.5) * palm[0] * 0.45
            fy = cy + side * palm[1] * 0.9
            finger = (max(2, int(palm[0] * 0.14)), int(palm[1] * rng.uniform(0.8, 1.4)))
            cv2.ellipse(alpha, (int(fx), int(fy)), finger, angle, 0, 360, 1.0, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), max(1.0, size / 80))[:, :, None]
    shading = np.linspace(rng.uniform(0.8, 1.0), rng.uniform(1.0, 1.15), size, dtype=np.float32)[:, None, None]
    hand = np.clip(colour[None, None, :] * shading + rng.normal(0, 4, view.shape), 0, 255)
    return (alpha * hand + (1 - alpha) * view.astype(np.float32)).astype(np.uint8)


def hand_over_mouth_view(crop: np.ndarray, key: str) -> np.ndarray:
    """The test-time view of a bare face behind a hand: a fixed stream per photo (``key``, its sha256) that
    training never draws from, so that every model is scored on the same hands."""
    return occlude_lower_face(crop, np.random.default_rng([99, int(key[:12], 16)]))


# Heights of the nose tip and the mouth in a face box (fractions from its top), for a face whose landmarks are
# not known: the medians of YuNet's landmarks on the `face-mask` portraits (10th-90th percentile: nose tip
# 0.59-0.72, mouth corners 0.74-0.88).
NOSE_AND_MOUTH = (0.65, 0.80)

# Colours of painted masks (BGR): black and dark cloth first -- the masks users report missed -- then common
# cloth and surgical colours. No skin tones: a skin-coloured patch over the mouth is the hand negative.
MASK_COLOURS = (
    (20, 20, 20), (35, 35, 40), (50, 45, 45), (70, 40, 30), (40, 60, 30), (40, 30, 90), (90, 60, 70),
    (120, 120, 120), (230, 230, 230), (220, 200, 170), (200, 170, 120), (150, 90, 40), (60, 60, 160),
    (150, 120, 200), (80, 160, 80), (40, 150, 220),
)


def mask_texture(size: int, rng: np.random.Generator) -> np.ndarray:
    """A (size, size, 3) cloth texture: a plain colour, stripes, checks, dots or a blotchy print."""
    colours = [np.array(MASK_COLOURS[i], np.float32) for i in rng.choice(len(MASK_COLOURS), 3, replace=False)]
    kind = rng.choice(["plain", "plain", "stripes", "checks", "dots", "print"])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = rng.uniform(0.04, 0.15) * size
    if kind == "plain":
        pattern = np.zeros((size, size), np.float32)
    elif kind == "stripes":
        angle = rng.uniform(0, np.pi)
        pattern = (np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period) > 0).astype(np.float32)
    elif kind == "checks":
        pattern = ((np.sin(xx * 2 * np.pi / period) > 0) ^ (np.sin(yy * 2 * np.pi / period) > 0)).astype(np.float32)
        pattern += 0.5 * (np.abs(np.sin(xx * np.pi / period)) < 0.15)  # plaid lines
    elif kind == "dots":
        pattern = ((np.sin(xx * 2 * np.pi / period) * np.sin(yy * 2 * np.pi / period)) > 0.6).astype(np.float32)
    else:  # a print: blurred noise cut into two or three colour levels
        noise = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), period / 3)
        noise = (noise - noise.min()) / (np.ptp(noise) + 1e-6)
        pattern = np.digitize(noise, [0.4, 0.65]).astype(np.float32) / 2 * 2
    pattern = np.clip(pattern, 0, 2)
    low, high = np.minimum(pattern, 1)[..., None], np.maximum(pattern - 1, 0)[..., None]
    return colours[0] * (1 - low) + colours[1] * low * (1 - high) + colours[2] * high


def paint_mask(
    view: np.ndarray, rng: np.random.Generator, margin: float = DEFAULT_MARGIN,
    below_nose: tuple[float, float] | None = None,
) -> np.ndarray:
    """Paint a cloth or surgical mask over nose, mouth and chin: black, coloured or patterned.

    Users report that black and patterned masks are missed. Painted on bare faces
    (then labelled ``with_mask``) it shows the model masks of every colour and print
    on faces whose other features it knows bare, so only the mask can decide.

    ``below_nose``, the heights of this face's nose tip and mouth in its box (fractions from the top, e.g.
    ``NOSE_AND_MOUTH``), paints the same masks with their top edge between the two: under the nose (the caller
    labels the view ``incorrect_mask``). Beside masks painted over the nose, it shows the model that what
    parts the two classes is whether the nose is covered, not how the mask looks.
    """
    size = view.shape[0]
    lo, inner = face_in_crop(size, margin)

    def at(u: float, v: float) -> tuple[float, float]:
        return lo + u * inner, lo + v * inner

    # (The draws keep their order whichever the branch, so masks over the nose are what they were before.)
    if below_nose:  # from a little under the nose tip to a little over the mouth corners
        nose, mouth = below_nose
        top = nose + rng.uniform(0.2, 0.6) * max(mouth - nose, 0.05)
    else:
        top = rng.uniform(0.45, 0.58)  # on the nose bridge
    bottom = rng.uniform(0.98, 1.1)  # under the chin
    width = rng.uniform(0.0, 0.08)
    if below_nose:
        side_top = top + rng.uniform(0.02, 0.06)
        side_bottom = max(side_top + 0.05, rng.uniform(0.86, 0.92))
    else:
        side_top, side_bottom = top + rng.uniform(0.08, 0.15), rng.uniform(0.78, 0.88)
    edge = [at(0.5 + t * (0.42 + width), top + (side_top - top) * abs(t) ** 1.5) for t in np.linspace(-1, 1, 15)]
    edge += [at(0.5 + 0.44 + width, side_bottom)]
    edge += [at(0.5 + np.sin(a) * (0.36 + width), side_bottom + (bottom - side_bottom) * np.cos(a))
             for a in np.linspace(np.pi / 2, -np.pi / 2, 15)]
    edge += [at(0.5 - 0.44 - width, side_bottom)]
    alpha: np.ndarray = np.zeros((size, size), np.float32)
    cv2.fillPoly(alpha, [np.round(np.array(edge)).astype(np.int32)], 1.0)
    alpha = cv2.GaussianBlur(alpha, (0, 0), max(0.7, size / 160))[:, :, None]

    cloth = mask_texture(size, rng)
    # Shape and light: darker towards the sides (the mask curves around the face), a little light from above,
    # and sometimes the horizontal pleats of a surgical mask.
    xx = (np.arange(size, dtype=np.float32) - size / 2) / (0.5 * inner)
    shading = (1 - 0.35 * np.clip(np.abs(xx), 0, 1) ** 2)[None, :, None]
    shading = shading * np.linspace(rng.uniform(1.0, 1.15), rng.uniform(0.75, 0.95), size)[:, None, None]
    if rng.random() < 0.3:
        rows = np.arange(size, dtype=np.float32)[:, None, None]
        shading = shading * (1 - 0.12 * (np.sin(rows * 2 * np.pi / (0.12 * inner)) > 0.7))
    cloth = np.clip(cloth * shading + rng.normal(0, 5, view.shape), 0, 255)
    painted = alpha * cloth + (1 - alpha) * view.astype(np.float32)
    if rng.random() < 0.5:  # ear loops
        colour = tuple(float(c) for c in cloth[int(lo + 0.8 * inner), int(lo + 0.5 * inner)])
        for u in (-0.02, 1.02):
            x, y = at(u, side_top)
            cv2.line(painted, (int(x), int(y)), (int(x + (u - 0.5) * 0.15 * inner), int(y - 0.1 * inner)),
                     colour, max(1, size // 80), cv2.LINE_AA)
    return painted.astype(np.uint8)


def random_view(
    crop: np.ndarray, out_size: int, rng: np.random.Generator, occlude: bool = False, paint: bool = False,
    below_nose: tuple[float, float] | None = None, margin: float = DEFAULT_MARGIN,
) -> np.ndarray:
    """One random training view: geometry, colour, blur, resolution and JPEG, in camera order.

    ``occlude`` (for bare faces only) sometimes puts a hand over the mouth as a hard negative;
    ``paint`` always paints a mask on (the caller labels the view ``with_mask``), with ``below_nose`` (the
    face's nose tip and mouth heights, as ``paint_mask`` takes them) under the nose (labelled ``incorrect_mask``).
    """
    size = crop.shape[0]
    view = crop[:, ::-1] if rng.random() < 0.5 else crop
    if occlude and rng.random() < 0.3:
        view = occlude_lower_face(view, rng)
    if paint:
        view = paint_mask(view, rng, margin, below_nose=below_nose)
    # Small rotation, zoom and shift: detectors' boxes wobble around the face.
    angle = rng.uniform(-15, 15)
    scale = rng.uniform(0.9, 1.12)
    shift = rng.uniform(-0.06, 0.06, size=2) * size
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
    matrix[:, 2] += shift
    view = cv2.warpAffine(view, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if rng.random() < 0.5:
        view = replace_surround(view, rng)
    # Light: contrast, brightness, a colour cast, sometimes grayscale (night cameras).
    view = view.astype(np.float32) * rng.uniform(0.7, 1.3) + rng.uniform(-30, 30)
    view *= rng.uniform(0.9, 1.1, size=3)
    if rng.random() < 0.1:
        view[:] = view.mean(axis=2, keepdims=True)
    view = np.clip(view, 0, 255).astype(np.uint8)
    if rng.random() < 0.2:
        view = cv2.GaussianBlur(view, (0, 0), rng.uniform(0.5, 1.8))
    if rng.random() < 0.5:
        view = as_small_face(view, rng.uniform(*TRAIN_FACE_SIZE_RANGE), size)
    if rng.random() < 0.7:
        view = jpeg(view, int(rng.integers(25, 96)))
    return resize_to(view, out_size)
