"""YuNet's training targets and loss, as its own training code (libfacedetection.train, ``YuNet_Head``) defines them.

- **Priors:** one per cell of each stride's grid, at the cell's top-left corner (``c * stride``); boxes decode as
  centre ``prior + d * stride`` and size ``exp(d) * stride``, landmarks as ``prior + d * stride``: exactly what
  ``cv2.FaceDetectorYN`` does with the outputs.
- **Assignment:** SimOTA (YOLOX). Candidates are priors whose centre (offset by half a cell) lies inside a face
  box or within 2.5 strides of its centre; the cost is the class cross-entropy of ``sqrt(cls * obj)`` plus
  3 x ``-log IoU``; each face takes its ``k`` cheapest priors, ``k`` being the summed top-10 IoUs.
- **Losses** (sums over the batch divided by the number of positives): objectness BCE over every prior (1 on
  positives), class BCE on positives with the IoU as target, ``1 - IoU²`` box loss (weight 5), and smooth-L1
  on the landmarks (weight 0.1) where the face has landmarks.

Two additions for fine-tuning (not in the original): *ignore* boxes, whose priors get no objectness loss
(faces cut by a crop, faces too small to learn), and landmark targets that may come from a teacher (the stock
model) when the data has no landmarks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from maskwatch.faces.yunet_ort import STRIDES

CENTER_RADIUS = 2.5
CANDIDATE_TOPK = 10
IOU_WEIGHT = 3.0
CLS_WEIGHT = 1.0
BOX_LOSS_WEIGHT = 5.0
KPS_LOSS_WEIGHT = 0.1
KPS_BETA = 1.0 / 9.0
INF = 1e8
TEACHER_MIN_IOU = 0.5
# With keep_teacher_faces: where the stock model sees a face (score at or above this) and no annotated face
# claims the prior, the objectness loss is left out (the sets do not box every face). Measured on mask-scenes
# val, face AP@0.5 of one pass over the first 4 epochs: 0.771 / 0.756 / 0.768 / 0.753 with it, 0.763 / 0.777 /
# 0.801 / 0.784 without; so it is off by default (`train-detector --keep-stock-faces`).
TEACHER_FACE_SCORE = 0.5


@dataclass
class Target:
    """One image's faces: boxes (F, 4) x1 y1 x2 y2, landmarks (F, 5, 2) with weights (F,), ignore boxes (G, 4)."""

    boxes: torch.Tensor
    landmarks: torch.Tensor
    landmark_weights: torch.Tensor
    ignore: torch.Tensor


def priors(height: int, width: int, strides: tuple[int, ...] = STRIDES) -> torch.Tensor:
    """(P, 3): x, y, stride of every prior, strides in order, rows then columns (the outputs' order)."""
    rows = []
    for stride in strides:
        ys, xs = torch.meshgrid(torch.arange(height // stride), torch.arange(width // stride), indexing="ij")
        grid = torch.stack([xs.reshape(-1) * stride, ys.reshape(-1) * stride], dim=1).float()
        rows.append(torch.cat([grid, torch.full((grid.shape[0], 1), float(stride))], dim=1))
    return torch.cat(rows)


def decode_boxes(prior: torch.Tensor, bbox: torch.Tensor) -> torch.Tensor:
    """(..., 4) x1 y1 x2 y2 from YuNet's box outputs."""
    stride = prior[..., 2:3]
    centre = prior[..., :2] + bbox[..., :2] * stride
    size = bbox[..., 2:].clamp(max=10.0).exp() * stride
    return torch.cat([centre - size / 2, centre + size / 2], dim=-1)


def encode_landmarks(prior: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(N, 10) kps targets from (N, 5, 2) points, for the priors (N, 3)."""
    return ((points - prior[:, None, :2]) / prior[:, None, 2:3]).reshape(-1, 10)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(A, B) IoU of x1 y1 x2 y2 boxes."""
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-9)


def aligned_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N,) IoU of row i of ``a`` with row i of ``b``."""
    top_left = torch.maximum(a[:, :2], b[:, :2])
    bottom_right = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    return inter / (area_a + area_b - inter + 1e-9)


@torch.no_grad()
def sim_ota(prior: torch.Tensor, scores: torch.Tensor, boxes: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """The face each prior is assigned to (-1: background), for one image.

    ``scores``: (P,) sigmoid(cls) * sigmoid(obj); ``boxes``: (P, 4) decoded predictions; ``gt``: (F, 4).
    """
    assigned = torch.full((prior.shape[0],), -1, dtype=torch.long)
    if len(gt) == 0:
        return assigned
    centre = prior[:, :2] + prior[:, 2:] * 0.5
    inside_box = ((centre[:, None] > gt[None, :, :2]) & (centre[:, None] < gt[None, :, 2:])).all(-1)
    gt_centre = (gt[:, :2] + gt[:, 2:]) / 2
    radius = CENTER_RADIUS * prior[:, None, 2:]
    inside_centre = ((centre[:, None] - gt_centre[None]).abs() < radius).all(-1)
    candidate = (inside_box | inside_centre).any(1)
    index = candidate.nonzero().squeeze(1)
    if len(index) == 0:
        return assigned
    ious = box_iou(boxes[index], gt)  # (C, F)
    iou_cost = -torch.log(ious + 1e-8)
    probability = scores[index].clamp(1e-6, 1 - 1e-6).sqrt()[:, None].expand_as(ious)
    cls_cost = F.binary_cross_entropy(probability, torch.ones_like(probability), reduction="none")
    both = inside_box[index] & inside_centre[index]
    cost = CLS_WEIGHT * cls_cost + IOU_WEIGHT * iou_cost + (~both).float() * INF
    matching = torch.zeros_like(cost, dtype=torch.bool)
    top_ious = ious.topk(min(CANDIDATE_TOPK, len(index)), dim=0).values
    dynamic_k = top_ious.sum(0).int().clamp(min=1)
    for face in range(len(gt)):
        cheapest = cost[:, face].topk(int(dynamic_k[face]), largest=False).indices
        matching[cheapest, face] = True
    several = matching.sum(1) > 1
    if several.any():
        best = cost[several].argmin(1)
        matching[several] = False
        matching[several.nonzero().squeeze(1), best] = True
    rows, faces = matching.nonzero(as_tuple=True)
    assigned[index[rows]] = faces
    return assigned


def detection_loss(outputs: dict[str, list[torch.Tensor]], targets: list[Target], height: int, width: int,
                   teacher: dict[str, list[torch.Tensor]] | None = None,
                   keep_teacher_faces: bool = False, distill: float = 0.0) -> dict[str, torch.Tensor]:
    """The four YuNet losses for a batch.

    ``teacher`` (the stock model's outputs on the same batch) fills in landmarks the data lacks, on the priors
    where the teacher's own box fits the face (IoU >= TEACHER_MIN_IOU): elsewhere its landmarks mean nothing.
    With ``keep_teacher_faces`` it also keeps unboxed faces it is sure of from being taught as background.
    ``distill`` > 0 adds a term that keeps the net's outputs (scores and boxes) near the teacher's wherever the
    teacher sees a face (TEACHER_FACE_SCORE): what the stock model finds, mostly bare faces, it keeps finding
    the same way, while the annotations teach the faces it misses.
    """
    prior = priors(height, width)
    cls = torch.cat(outputs["cls"], 1)[..., 0]  # (N, P)
    obj = torch.cat(outputs["obj"], 1)[..., 0]
    bbox = torch.cat(outputs["bbox"], 1)  # (N, P, 4)
    kps = torch.cat(outputs["kps"], 1)  # (N, P, 10)
    decoded = decode_boxes(prior, bbox)
    teacher_sure = None
    loss_distill = obj.new_zeros(())
    if teacher is not None and (keep_teacher_faces or distill > 0):
        teacher_cls, teacher_obj = (torch.cat(teacher[head], 1)[..., 0].sigmoid() for head in ("cls", "obj"))
        sure = torch.sqrt(teacher_cls * teacher_obj) >= TEACHER_FACE_SCORE
        teacher_sure = sure if keep_teacher_faces else None
        if distill > 0 and sure.any():
            teacher_bbox = torch.cat(teacher["bbox"], 1)
            loss_distill = distill * (
                F.binary_cross_entropy_with_logits(cls[sure], teacher_cls[sure], reduction="sum")
                + F.binary_cross_entropy_with_logits(obj[sure], teacher_obj[sure], reduction="sum")
                + F.smooth_l1_loss(bbox[sure], teacher_bbox[sure], beta=KPS_BETA, reduction="sum"))
    teacher_kps = torch.cat(teacher["kps"], 1) if teacher is not None else None
    teacher_boxes = decode_boxes(prior, torch.cat(teacher["bbox"], 1)) if teacher is not None else None
    obj_target = torch.zeros_like(obj)
    obj_weight = torch.ones_like(obj)
    positives: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    for i, target in enumerate(targets):
        scores = torch.sigmoid(cls[i].detach()) * torch.sigmoid(obj[i].detach())
        assigned = sim_ota(prior, scores, decoded[i].detach(), target.boxes)
        index = (assigned >= 0).nonzero().squeeze(1)
        obj_target[i, index] = 1.0
        if len(target.ignore):
            centre = prior[:, :2] + prior[:, 2:] * 0.5
            ignored = ((centre[:, None] > target.ignore[None, :, :2])
                       & (centre[:, None] < target.ignore[None, :, 2:])).all(-1).any(1)
            obj_weight[i, ignored & (assigned < 0)] = 0.0
        if teacher_sure is not None:
            obj_weight[i, teacher_sure[i] & (assigned < 0)] = 0.0
        positives.append((i, index, assigned[index]))
    count = max(1.0, float(sum(len(index) for _, index, _ in positives)))
    loss_obj = F.binary_cross_entropy_with_logits(obj, obj_target, weight=obj_weight, reduction="sum") / count
    loss_cls = obj.new_zeros(())
    loss_box = obj.new_zeros(())
    loss_kps = obj.new_zeros(())
    kps_weight_sum = 0.0
    for i, index, face in positives:
        if len(index) == 0:
            continue
        target = targets[i]
        gt = target.boxes[face]
        iou = aligned_iou(decoded[i, index], gt)
        loss_box = loss_box + (1 - iou**2).sum()
        loss_cls = loss_cls + F.binary_cross_entropy_with_logits(cls[i, index], iou.detach(), reduction="sum")
        weight = target.landmark_weights[face]
        wanted = encode_landmarks(prior[index], target.landmarks[face])
        if teacher_kps is not None and teacher_boxes is not None:
            use_teacher = weight <= 0
            wanted = torch.where(use_teacher[:, None], teacher_kps[i, index], wanted)
            fits = (aligned_iou(teacher_boxes[i, index], gt) >= TEACHER_MIN_IOU).float()
            weight = torch.where(use_teacher, fits, weight)
        per_row = F.smooth_l1_loss(kps[i, index], wanted, beta=KPS_BETA, reduction="none").sum(1)
        loss_kps = loss_kps + (per_row * weight).sum()
        kps_weight_sum += float(weight.sum())
    parts = {
        "obj": loss_obj,
        "cls": loss_cls / count,
        "box": BOX_LOSS_WEIGHT * loss_box / count,
        "kps": KPS_LOSS_WEIGHT * loss_kps / max(1.0, kps_weight_sum),
    }
    if distill > 0:
        parts["distill"] = loss_distill / count
    return parts
