"""Stage 07 training benchmark: training throughput of BioCLIP 2's step against a plain CLIP step
measured in the same run.

(a) CPU, always: the cpu-tiny profile (tolpipe-tiny-vit, 64 px) on random pixels and captions
    (no data loading): samples/s of the full BioCLIP 2 step (organism batch through the main
    projection + replay batch through the replay projection, two ClipLosses, AdamW) against a
    plain open_clip CLIP step on the same organism batch (one ClipLoss): the ratio is what the
    replay path costs.
(b) GPU (`--gpu`, or whenever CUDA is available): ViT-L-14 at 224 px, bf16 autocast, the
    organism:replay ratio of Table 4 (2,816:320), with and without gradient checkpointing: the
    largest per-GPU batch that fits (doubling, then bisecting between the last fit and the first
    out-of-memory), samples/s/GPU at that batch, and model FLOPs utilisation: the FLOPs of one
    training step counted by torch's FlopCounterMode (forward and backward, not assumed; about 3x
    the 2 x 130 GFLOP forward of ViT-L/14 + text tower per sample) over the elapsed time,
    divided by the GPU's peak (`--peak-tflops`, default 989: H100/H200 dense bf16).

    python bench/bench_train.py [--steps 20] [--gpu] [--peak-tflops 989] [--max-batch 4096]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPLAY_RATIO = 320 / 2816  # Table 4: replay samples per organism sample


def _batch(size: int, replay: int, image_px: int, context: int, device):
    import torch

    g = torch.Generator().manual_seed(0)
    images = torch.randn(size, 3, image_px, image_px, generator=g).to(device)
    texts = torch.randint(1, 49000, (size, context), generator=g).to(device)
    replay_images = torch.randn(replay, 3, image_px, image_px, generator=g).to(device)
    replay_texts = torch.randint(1, 49000, (replay, context), generator=g).to(device)
    return images, texts, replay_images, replay_texts


def _step_fns(model_name: str, device, grad_checkpointing: bool, bf16: bool):
    """(bioclip step, plain clip step, bioclip model) closures over one model."""
    import contextlib

    import torch
    from open_clip import ClipLoss

    from training.loss import ReplayClipLoss
    from training.model import build_model

    model, _, _ = build_model(model_name, "", grad_checkpointing)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2)
    loss, plain_loss = ReplayClipLoss(), ClipLoss()
    cast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    def bioclip(images, texts, replay_images, replay_texts):
        with cast():
            total = loss(model(images, texts, replay_images, replay_texts))["total"]
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    def plain(images, texts, *_):
        with cast():
            image = model.clip.encode_image(images, normalize=True)
            text = model.clip.encode_text(texts, normalize=True)
            total = plain_loss(image, text, model.clip.logit_scale.exp())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    return bioclip, plain, model


def _rate(step, batch, size: int, steps: int, sync) -> float:
    step(*batch)  # warm-up
    sync()
    started = time.perf_counter()
    for _ in range(steps):
        step(*batch)
    sync()
    return size * steps / (time.perf_counter() - started)


def bench_cpu(steps: int) -> None:
    import torch

    from training.profiles import profiles

    profile = profiles()["cpu-tiny"]
    size, replay = profile["batch_size"], profile["replay_batch_size"]
    device = torch.device("cpu")
    bioclip, plain, _ = _step_fns(profile["model"], device, False, False)
    batch = _batch(size, replay, 64, 32, device)
    def nothing() -> None:
        return None

    rounds = [(_rate(plain, batch, size, steps, nothing), _rate(bioclip, batch, size, steps, nothing))
              for _ in range(3)]  # fmt: skip
    plain_rate, bioclip_rate = max(r[0] for r in rounds), max(r[1] for r in rounds)
    print(f"cpu-tiny ({profile['model']}, batch {size} + {replay} replay, {torch.get_num_threads()} threads, "
          f"best of 3 x {steps} steps):")  # fmt: skip
    print(f"  plain CLIP step     {plain_rate:8.1f} samples/s")
    ratio = bioclip_rate / plain_rate
    print(f"  BioCLIP 2 step      {bioclip_rate:8.1f} organism samples/s  ({ratio:.2f}x the plain "
          f"step; the replay path adds {replay} images and texts)")  # fmt: skip


def _fits(model_name: str, size: int, grad_checkpointing: bool) -> bool:
    import torch

    device = torch.device("cuda")
    try:
        bioclip, _, model = _step_fns(model_name, device, grad_checkpointing, True)
        batch = _batch(size, max(1, round(size * REPLAY_RATIO)), 224, 77, device)
        bioclip(*batch)
        torch.cuda.synchronize()
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        import gc

        gc.collect()
        torch.cuda.empty_cache()


def _largest_batch(model_name: str, grad_checkpointing: bool, limit: int) -> int:
    low, high = 0, 32
    while high <= limit and _fits(model_name, high, grad_checkpointing):
        low, high = high, high * 2
    high = min(high, limit + 1)
    while high - low > 8:
        middle = (low + high) // 2
        low, high = (middle, high) if _fits(model_name, middle, grad_checkpointing) else (low, middle)
    return low


def _step_flops(step, batch) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step(*batch)
    return float(counter.get_total_flops())


def _model_flops_per_sample(model_name: str) -> float:
    """Training FLOPs (forward + backward, no recomputation) per organism sample with its replay
    share, counted on a batch of 32 + 4 without gradient checkpointing."""
    import torch

    bioclip, _, _ = _step_fns(model_name, torch.device("cuda"), False, True)
    flops = _step_flops(bioclip, _batch(32, 4, 224, 77, torch.device("cuda")))
    del bioclip
    torch.cuda.empty_cache()
    return flops / 32


def bench_gpu(steps: int, peak_tflops: float, max_batch: int) -> None:
    import torch

    model_name = "ViT-L-14"
    sync = torch.cuda.synchronize
    gpu = torch.cuda.get_device_name()
    print(f"GPU: {gpu}, {model_name} 224 px, bf16 autocast, replay {REPLAY_RATIO:.3f} "
          f"of the organism batch (Table 4)")  # fmt: skip
    per_sample = _model_flops_per_sample(model_name)
    print(f"  model FLOPs counted: {per_sample / 1e9:.0f} GFLOP per organism sample (with its replay share; "
          f"forward + backward, recomputation not counted)")  # fmt: skip
    for checkpointing in (False, True):
        mode = "on " if checkpointing else "off"
        size = _largest_batch(model_name, checkpointing, max_batch)
        if size == 0:
            print(f"  grad checkpointing {mode}: not even 32 samples fit")
            continue
        replay = max(1, round(size * REPLAY_RATIO))
        bioclip, _, _ = _step_fns(model_name, torch.device("cuda"), checkpointing, True)
        batch = _batch(size, replay, 224, 77, torch.device("cuda"))
        rate = _rate(bioclip, batch, size, steps, sync)
        mfu = per_sample * rate / (peak_tflops * 1e12)
        print(f"  grad checkpointing {mode}: largest batch {size} + {replay} replay, "
              f"{rate:.1f} samples/s/GPU, MFU {mfu:.1%} of {peak_tflops:.0f} TFLOPS")  # fmt: skip
        del bioclip, batch
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement (default 20)")
    parser.add_argument("--gpu", action="store_true", help="also the ViT-L-14 GPU figures (needs CUDA)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="GPU peak bf16 TFLOPS for MFU")
    parser.add_argument("--max-batch", type=int, default=4096, help="largest per-GPU batch tried")
    args = parser.parse_args()
    import torch

    from training.profiles import register_model_configs

    register_model_configs()
    bench_cpu(args.steps)
    if args.gpu or torch.cuda.is_available():
        if not torch.cuda.is_available():
            raise SystemExit("--gpu: CUDA is not available on this machine")
        bench_gpu(args.steps, args.peak_tflops, args.max_batch)
    else:
        print("GPU figures: not run (no CUDA here; `--gpu` on a GPU node)")


if __name__ == "__main__":
    main()
