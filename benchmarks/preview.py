"""Seconds to the Cells page's first picture for a big model: ResNet-18 at 224x224 on imagenet-samples.

Mimics the page's steps for one model at 31x31 (``python benchmarks/preview.py [--res 31] [--threads 1]``):
load the checkpoint and the test images, predict the gallery's samples, build the plane, time the model
(the estimate that decides on a preview), the coarse preview (:func:`jacreg.cells.preview_section`),
then the full cross section. The weights are random (no ImageNet weights offline), so the map is
mostly one class: the refined full map then evaluates little more than its coarse grid.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jacreg import architectures, cells  # noqa: E402
from jacreg.checkpoints import load_checkpoint, save_checkpoint  # noqa: E402
from jacreg.data import load_dataset  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--res", type=int, default=31)
    p.add_argument("--extent", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--plane", choices=("random", "adversarial"), default="random")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resnet18.safetensors"
        torch.manual_seed(0)
        save_checkpoint(architectures.create("resnet18"), {"arch": "resnet18", "dataset": "imagenet-samples",
                                                           "num_classes": 1000}, path)
        t0 = time.perf_counter()
        model, _ = load_checkpoint(path, device="cpu")
        x, y = load_dataset("imagenet-samples", split="test")
        t_load = time.perf_counter() - t0
        cells.predict(model, x[:24])  # the page's sample table and gallery
        t_gallery = time.perf_counter() - t0
        plane = (cells.random_plane(x[0], seed=0) if args.plane == "random"
                 else cells.adversarial_plane(x[0], int(y[0]), model, None))
        t_plane = time.perf_counter() - t0
        spp = cells.seconds_per_point(model, x[0])
        estimate = spp * args.res ** 2
        t_estimate = time.perf_counter() - t0
        pre = cells.preview_section(model, plane, args.extent, args.res)
        t_preview = time.perf_counter() - t0
        print(f"load {t_load:.1f} s; gallery predictions at {t_gallery:.1f} s; plane at {t_plane:.1f} s; "
              f"timing at {t_estimate:.1f} s ({spp * 1000:.0f} ms per point, full {args.res}x{args.res} map "
              f"estimated at {estimate:.0f} s, preview: {estimate > cells.PREVIEW_AFTER_SECONDS}); first "
              f"picture ({pre.resolution}x{pre.resolution} preview, {int(pre.evaluations[0])} evaluations) "
              f"at {t_preview:.1f} s", flush=True)
        cs = cells.cross_section(model, plane, args.extent, args.res)
        t_full = time.perf_counter() - t0
        print(f"full {args.res}x{args.res} map ({int(cs.evaluations[0])} evaluations, circle "
              f"{int(cs.boundary_evaluations[0])}, radius {cs.boundary_distance[0]:.4g}, searched "
              f"{cs.boundary_searched[0]:.4g}) at {t_full:.1f} s", flush=True)


if __name__ == "__main__":
    main()
