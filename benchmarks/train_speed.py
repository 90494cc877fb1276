"""Fine-tuning speed on this CPU, side by side: channels-last against the default memory format.

    python benchmarks/train_speed.py [--backbone efficientnet_lite0] [--batch 32] [--rounds 5]

One training step (forward, backward, AdamW) on a batch of random images, for
each unfreeze setting of ``maskwatch train --unfreeze`` and both memory formats.
The settings are interleaved round by round, so a noisy machine slows all alike;
the figure is the median step time in milliseconds, and images per second.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from maskwatch.training.backbones import backbone_spec, create_backbone
from maskwatch.training.finetune import set_trainable
from maskwatch.training.model import build_head


def make_step(backbone: str, unfreeze: str, channels_last: bool, batch: int):
    spec = backbone_spec(backbone)
    module = create_backbone(backbone, pretrained=True)
    set_trainable(module, unfreeze)
    head = build_head("gap", spec.feature_dim, 256, 0.5)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    module.to(memory_format=memory)
    parameters = [p for p in module.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=1e-4)
    images = torch.randn(batch, 3, spec.input_size, spec.input_size).contiguous(memory_format=memory)
    labels = torch.randint(0, 2, (batch,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad()
        loss_fn(head(module(images)), labels).backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="timed steps of each setting")
    parser.add_argument("--unfreeze", default="2,all", help="comma list of unfreeze settings")
    args = parser.parse_args()

    settings = [(u, cl) for u in args.unfreeze.split(",") for cl in (False, True)]
    steps = {s: make_step(args.backbone, s[0], s[1], args.batch) for s in settings}
    for step in steps.values():  # warm-up: allocation and kernel choice
        step()
    times: dict[tuple[str, bool], list[float]] = {s: [] for s in settings}
    for _ in range(args.rounds):
        for setting, step in steps.items():
            start = time.perf_counter()
            step()
            times[setting].append(time.perf_counter() - start)

    print(f"{args.backbone}, batch {args.batch}, {torch.get_num_threads()} threads, median of {args.rounds} steps")
    print(f"{'unfreeze':>9} {'memory':>14} {'ms/step':>9} {'images/s':>9}")
    for (unfreeze, channels_last), seconds in times.items():
        median = statistics.median(seconds)
        memory = "channels_last" if channels_last else "contiguous"
        print(f"{unfreeze:>9} {memory:>14} {1000 * median:9.0f} {args.batch / median:9.1f}")


if __name__ == "__main__":
    main()
