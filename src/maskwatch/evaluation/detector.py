"""``maskwatch evaluate --scenes DIR --faces-only``: the face detector alone on VOC scenes, every class a face.

What a face model is chosen by: recall per annotated class (masked, bare, badly masked) and face size, false
faces per image, AP of "face" (at the matching overlap, 0.5 unless asked otherwise; the result key
``face_ap50`` holds it whatever the overlap) and the time per image. No classifier runs, so a detector comparison takes
a fraction of the full scene evaluation. Matching and ignore rules are the scene evaluation's.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from maskwatch.evaluation.common import fmt, markdown_table
from maskwatch.evaluation.scenes import IOU_THRESHOLD, GroundTruth, match
from maskwatch.faces import Face, FaceDetector
from maskwatch.images import ImageError, load_image
from maskwatch.training.metrics import average_precision
from maskwatch.voc import find_scenes, manifest_sources, read_voc

# Face sizes (box height, px) the detector figures are split by: the two targets.
SIZE_GROUPS = ((16.0, 24.0, "16-23"), (24.0, np.inf, "24+"))


def evaluate_detector(root: str | Path, detector: FaceDetector, min_face: float = 16.0, split: str | None = None,
                      progress: bool = False, limit: int | None = None,
                      iou_threshold: float = IOU_THRESHOLD) -> dict:
    """Recall by class and size, false faces, face AP and ms per image of ``detector`` on a scene set."""
    return sweep_thresholds(root, detector, [detector.score_threshold], min_face, split, progress, limit,
                            iou_threshold)[0]


def sweep_thresholds(root: str | Path, detector: FaceDetector, thresholds: list[float], min_face: float = 16.0,
                     split: str | None = None, progress: bool = False, limit: int | None = None,
                     iou_threshold: float = IOU_THRESHOLD) -> list[dict]:
    """``evaluate_detector`` at each face score threshold, from one run of the detector at the lowest.

    ``limit``: only the first N images (quick checks; the figures then describe those alone).
    ``iou_threshold``: how much a detection must overlap a face to find it (0.5; lower it to see how many
    misses are boxes drawn in another style rather than faces not found). Face AP is reported at it too.
    """
    root = Path(root)
    pairs, lost = find_scenes(root, split)
    pairs = pairs[:limit] if limit else pairs
    if not pairs:
        raise ValueError(f"no VOC annotation (.xml) files with their images under {root}")
    seen: list[tuple[list[GroundTruth], list[Face]]] = []
    sources: list[str] = []
    known_sources = manifest_sources(root)
    unreadable, seconds = [], 0.0
    keep = detector.score_threshold
    detector.score_threshold = min(thresholds)
    try:
        for image_path, xml in tqdm(pairs, desc="faces", unit="img", disable=not progress, file=sys.stderr):
            try:
                image = load_image(image_path)
            except ImageError as exc:
                unreadable.append(f"{image_path.relative_to(root)}: {exc}")
                continue
            objects = [GroundTruth(box, name, "face", "difficult" if difficult else
                                   "small" if box[3] - box[1] < min_face else "")
                       for name, box, difficult in read_voc(xml)[1]]
            began = time.perf_counter()
            faces = detector.detect(image)
            seconds += time.perf_counter() - began
            seen.append((objects, faces))
            sources.append(known_sources.get(xml.relative_to(root).as_posix(), ""))
    finally:
        detector.score_threshold = keep
    results = []
    for threshold in thresholds:
        kept = [(objects, [f for f in faces if f.score >= threshold]) for objects, faces in seen]
        result = _score(kept, min_face, iou_threshold)
        if any(sources):
            result["recall_by_source"] = {
                source: _score([k for k, s in zip(kept, sources, strict=True) if s == source], min_face,
                               iou_threshold)["recall"]
                for source in sorted(set(sources))}
        result.update(data=str(root), split=split, score_threshold=threshold, iou_threshold=iou_threshold,
                      ms_per_image=1000 * seconds / len(seen) if seen else None,
                      annotations_without_image=lost, unreadable=unreadable)
        results.append(result)
    return results


def _score(seen: list[tuple[list[GroundTruth], list[Face]]], min_face: float, iou_threshold: float) -> dict:
    faces: Counter = Counter()
    found: Counter = Counter()
    scores: list[float] = []
    hits: list[bool] = []
    false_faces = 0
    for objects, detections in seen:
        face_scores = [d.score for d in detections]
        matches, ignored = match(objects, [d.box for d in detections], face_scores, min_face,
                                 iou_threshold=iou_threshold)
        for gt in objects:
            if not gt.ignored:
                faces[(gt.name, _group(gt.box))] += 1
        for m in matches:
            if m is not None:
                found[(objects[m].name, _group(objects[m].box))] += 1
        false_faces += sum(m is None and not skip for m, skip in zip(matches, ignored, strict=True))
        for score, m, skip in zip(face_scores, matches, ignored, strict=True):
            if not skip:
                scores.append(score)
                hits.append(m is not None)
    counted = sum(faces.values())
    names = sorted({name for name, _ in faces})
    recall = {name: {group: _ratio(found[(name, group)], faces[(name, group)]) | {"faces": faces[(name, group)]}
                     for _, _, group in SIZE_GROUPS} for name in names}
    for name in names:
        total = sum(faces[(name, g)] for *_, g in SIZE_GROUPS)
        recall[name]["all"] = _ratio(sum(found[(name, g)] for *_, g in SIZE_GROUPS), total) | {"faces": total}
    images = len(seen)
    return {
        "images": images, "min_face": min_face, "faces": counted, "found": sum(found.values()), "recall": recall,
        "false_faces": false_faces, "false_faces_per_image": false_faces / images if images else None,
        "face_ap50": average_precision(np.array(scores, float), np.array(hits, bool), counted),
    }


def _group(box: tuple[float, float, float, float]) -> str:
    height = box[3] - box[1]
    return next((name for low, high, name in SIZE_GROUPS if low <= height < high), "small")


def _ratio(found: int, faces: int) -> dict:
    return {"found": found, "recall": found / faces if faces else None}


def _cell(cell: dict) -> str:
    return f"{fmt(cell['recall'])} ({cell['faces']})" if "faces" in cell else fmt(cell["recall"])


def detector_markdown(result: dict, title: str = "") -> str:
    groups = [g for *_, g in SIZE_GROUPS] + ["all"]
    rows = [[name, *(_cell(cells[g]) for g in groups)] for name, cells in result["recall"].items()]
    text = f"{title}\n\n" if title else ""
    text += markdown_table(["class", *(f"recall {g} px" for g in groups)], rows) + "\n\n"
    text += (f"{result['images']} images, {result['faces']} faces of {result['min_face']:g} px and up: "
             f"face AP@{result['iou_threshold']:g} {fmt(result['face_ap50'])}, false faces {result['false_faces']} "
             f"({fmt(result['false_faces_per_image'], 2)} per image), {fmt(result['ms_per_image'], 1)} ms per "
             "image.\n")
    if result.get("recall_by_source"):
        names = list(result["recall"])
        rows = [[source or "(none)", *(_cell(cells[name]["all"]) if name in cells else "-" for name in names)]
                for source, cells in result["recall_by_source"].items()]
        text += f"\nRecall by source (the set's manifest), faces of {result['min_face']:g} px and up:\n\n"
        text += markdown_table(["source", *names], rows) + "\n"
    return text


# How a trained face model's photo defaults are chosen on val (`maskwatch train-detector`). A missed face is a
# person the tool never judges, so recall comes first, within a budget of false faces: per set of passes, the
# lowest score threshold whose false faces per image stay within the budget (the stock model's at its one-pass
# default, measured in the same run); then the fewest passes whose recall is within PASS_RECALL_TOLERANCE of
# the best set's. More passes cost time on every photo.
SWEEP_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
PASS_RECALL_TOLERANCE = 0.01


def face_f1(result: dict) -> float:
    found, faces, false = result["found"], result["faces"], result["false_faces"]
    return 2 * found / (faces + found + false) if faces + found + false else 0.0


def choose_face_defaults(sweeps: dict[tuple[float, ...], list[dict]], false_budget: float
                         ) -> tuple[tuple[float, ...], float]:
    """(extra scales, score threshold) from ``sweep_thresholds`` results for each set of extra passes."""
    best = {}
    for scales, results in sweeps.items():
        within = [r for r in results if (r["false_faces_per_image"] or 0.0) <= false_budget]
        best[scales] = (min(within, key=lambda r: r["score_threshold"]) if within
                        else max(results, key=lambda r: r["score_threshold"]))
    top_recall = max(r["found"] / r["faces"] for r in best.values())
    enough = [scales for scales, r in best.items() if r["found"] / r["faces"] >= top_recall - PASS_RECALL_TOLERANCE]
    scales = min(enough, key=len)
    return scales, float(best[scales]["score_threshold"])


def _iou_of(sweeps: dict[tuple[float, ...], list[dict]]) -> float:
    return next((r["iou_threshold"] for results in sweeps.values() for r in results), IOU_THRESHOLD)


def sweep_markdown(sweeps: dict[tuple[float, ...], list[dict]]) -> str:
    """One row per (passes, threshold): recall of each class at 16-23 and 24+ px, false faces, F1, AP, ms."""
    names = sorted({name for results in sweeps.values() for r in results for name in r["recall"]})
    headers = ["extra passes", "threshold", *(f"{n} {g}" for n in names for g in ("16-23", "24+")),
               "false / image", "F1", f"face AP@{_iou_of(sweeps):g}", "ms / image"]
    rows = []
    for scales, results in sweeps.items():
        for r in results:
            rows.append([",".join(f"{s:g}x" for s in scales) or "none", f"{r['score_threshold']:g}",
                         *(fmt(r["recall"][n][g]["recall"]) for n in names for g in ("16-23", "24+")),
                         fmt(r["false_faces_per_image"], 2), fmt(face_f1(r)), fmt(r["face_ap50"]),
                         fmt(r["ms_per_image"], 1)])
    return markdown_table(headers, rows) + "\n"
