"""The training loop: BioCLIP 2's recipe on open_clip parts.

One step: an organism batch (one caption type, drawn per step), a replay batch, forward through
BioClip (main / replay projections), ReplayClipLoss, backward, AdamW with open_clip's cosine
schedule and warm-up. bf16 autocast and gradient checkpointing when the profile says so, DDP
when started by torchrun or by srun/submitit with several tasks. A checkpoint every
`checkpoint_every` steps and at the end; a resumed run continues at the saved step and data
position. Slurm's preemption and time-out signals wait (training/signals.py) while a step's update is applied,
so a checkpoint taken from a signal handler never sees a half-updated model.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from training import checkpoint as ckpt
from training.profiles import TrainSettings
from training.signals import install as install_signal_deferral
from training.signals import signals_deferred

METRICS_FILE = "metrics.jsonl"
# open_clip clamps the logit scale to ln(100) after every update.
MAX_LOGIT_SCALE = math.log(100)

# The trainer running in this process, for a checkpoint requested by a signal (submit.TrainJob).
ACTIVE: Trainer | None = None


@dataclass
class Position:
    """Where the data stream is: the epoch, organism batches taken in it, replay batches taken."""

    epoch: int = 0
    batch: int = 0
    replay_batches: int = 0


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    local_rank: int = 0
    world: int = 1


def init_distributed() -> Dist:
    """torchrun / srun environments -> a process group; a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Dist(dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size())


def _param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """open_clip's rule: no weight decay on gains, biases, norms, the logit scale."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exclude = param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if exclude else decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


class Trainer:
    def __init__(self, settings: TrainSettings, run_dir: Path, log: Callable[[str], None] | None = None):
        import torch

        from training.data import batches_per_epoch, organism_shards
        from training.loss import ReplayClipLoss
        from training.model import build_model, train_transform

        self.settings, self.run_dir = settings, Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.dist = init_distributed()
        self.log = log or (lambda text: print(text, flush=True))
        use_cuda = torch.cuda.is_available() and settings.gpus_per_node > 0
        self.device = torch.device(f"cuda:{self.dist.local_rank}" if use_cuda else "cpu")
        if use_cuda:
            torch.cuda.set_device(self.device)
        torch.manual_seed(settings.seed)
        self.model, _, self.tokenizer = build_model(
            settings.model, settings.pretrained, settings.grad_checkpointing
        )
        self.model.to(self.device)
        self.transform = train_transform(settings.model)
        self.shards = organism_shards(settings.data)
        self.per_epoch = batches_per_epoch(self.shards.samples, settings.batch_size, self.dist.world)
        self.total_steps = settings.max_steps or settings.epochs * self.per_epoch
        self.loss = ReplayClipLoss(self.dist.rank, self.dist.world)
        self.optimizer = torch.optim.AdamW(
            _param_groups(self.model, settings.weight_decay), lr=settings.lr,
            betas=(settings.beta1, settings.beta2), eps=settings.eps,
        )  # fmt: skip
        from open_clip_train.scheduler import cosine_lr

        self.schedule = cosine_lr(self.optimizer, settings.lr, settings.warmup_steps, self.total_steps)
        self.step, self.saved_step, self.position = 0, -1, Position()
        self.taxa: set[tuple[str, ...]] = set()
        self.resumed_from: str | None = None
        self._resume()
        self.ddp = self._wrap()

    def _wrap(self) -> Any:
        if self.dist.world <= 1:
            return self.model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(self.model, device_ids=ids)

    def _resume(self) -> None:
        path = ckpt.latest(self.run_dir)
        if path is None:
            return
        state = ckpt.load(path, "cpu")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = self.saved_step = state["step"]
        self.position = Position(**state["position"])
        self.taxa = {tuple(t) for t in state.get("taxa", [])}
        ckpt.restore_rng(state["rng"])
        self.resumed_from = str(path)
        self.log(f"resumed from {path}: step {self.step}, epoch {self.position.epoch}, "
                 f"batch {self.position.batch}")  # fmt: skip

    def state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"kind": "cosine", "step": self.step, "base_lr": self.settings.lr,
                          "warmup_steps": self.settings.warmup_steps, "total_steps": self.total_steps},
            "position": asdict(self.position),
            "rng": ckpt.rng_states(),
            "settings": self.settings.to_dict(),
            "taxa": sorted(self.taxa),
        }  # fmt: skip

    def save(self) -> Path | None:
        """Checkpoint now (rank 0 writes); None when this step is already saved."""
        if self.step == self.saved_step:
            return None
        path = ckpt.save(self.run_dir, self.step, self.state()) if self.dist.rank == 0 else None
        self.saved_step = self.step
        if path:
            self.log(f"checkpoint {path}")
        return path

    def _batches(self) -> Iterator[tuple]:
        from training.data import organism_batches

        s = self.settings
        while True:
            stream = organism_batches(self.shards, self.transform, s.batch_size, s.seed, self.position.epoch,
                                      self.position.batch, self.dist.rank, self.dist.world,
                                      s.workers)  # fmt: skip
            yield from stream
            self.position.epoch += 1
            self.position.batch = 0

    def _replay(self) -> Iterator[tuple] | None:
        from training.data import replay_batches, replay_shards

        s = self.settings
        if not s.replay_data or s.replay_batch_size <= 0:
            return None
        return replay_batches(replay_shards(s.replay_data), self.transform, s.replay_batch_size, s.seed,
                              self.position.replay_batches, self.dist.rank, self.dist.world)  # fmt: skip

    def _autocast(self) -> Any:
        import torch

        if self.settings.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train(self) -> dict[str, Any]:
        global ACTIVE
        import torch

        from training.data import captions_for_step

        ACTIVE = self
        if threading.current_thread() is threading.main_thread():
            install_signal_deferral()  # submitit's checkpoint handler waits for whole steps
        s = self.settings
        batches, replay = self._batches(), self._replay()
        metrics = open(self.run_dir / METRICS_FILE, "a") if self.dist.rank == 0 else None  # noqa: SIM115
        started, first_step = time.monotonic(), self.step
        self.model.train()
        try:
            while self.step < self.total_steps:
                keys, images, *captions, attributions = next(batches)
                caption_type, caption_texts = captions_for_step(captions, s.caption_types, s.seed, self.step)
                texts = self.tokenizer(caption_texts).to(self.device)
                self.taxa.update(tuple(a.get(r) or "" for r in RANKS) for a in attributions)
                replay_images = replay_texts = None
                if replay is not None:
                    r_images, r_texts = next(replay)
                    replay_images, replay_texts = (
                        r_images.to(self.device),
                        self.tokenizer(r_texts).to(self.device),
                    )
                lr = self.schedule(self.step)
                with self._autocast():
                    features = self.ddp(images.to(self.device), texts, replay_images, replay_texts)
                    losses = self.loss(features)
                self.optimizer.zero_grad(set_to_none=True)
                losses["total"].backward()
                with signals_deferred():
                    self.optimizer.step()
                    with torch.no_grad():
                        self.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
                    self.step += 1
                    self.position.batch += 1
                    self.position.replay_batches += 1 if replay is not None else 0
                    # The step's metrics line and checkpoint go with it: a checkpoint taken by a
                    # signal never holds a step the metrics file lacks.
                    if metrics is not None:
                        self._record(metrics, losses, lr, caption_type, keys[0], started, first_step)
                    if self.step % s.checkpoint_every == 0 or self.step == self.total_steps:
                        self.save()
        finally:
            if metrics is not None:
                metrics.close()
            ACTIVE = None
        elapsed = time.monotonic() - started
        done = self.step - first_step
        return {"steps": self.step, "total_steps": self.total_steps, "elapsed_s": round(elapsed, 2),
                "samples_per_s": round(done * s.batch_size * self.dist.world / max(elapsed, 1e-9), 2),
                "resumed_from": self.resumed_from, "checkpoint": str(ckpt.latest(self.run_dir))}  # fmt: skip

    def _record(self, handle, losses, lr, caption_type, first_key, started, first_step) -> None:
        row = {"step": self.step, "epoch": self.position.epoch, "batch": self.position.batch,
               "loss": losses["total"].item(), "organism_loss": losses["organism"].item(),
               "replay_loss": losses["replay"].item() if "replay" in losses else None, "lr": lr,
               "logit_scale": self.model.logit_scale.exp().item(), "caption_type": caption_type,
               "first_key": first_key}  # fmt: skip
        handle.write(json.dumps(row) + "\n")
        handle.flush()
        if self.step % self.settings.log_every == 0 or self.step == self.total_steps:
            rate = (self.step - first_step) * self.settings.batch_size / max(time.monotonic() - started, 1e-9)
            self.log(f"step {self.step}/{self.total_steps} loss {row['loss']:.4f} lr {lr:.2e} "
                     f"{caption_type} {rate:.1f} samples/s/rank")  # fmt: skip


RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")


def train(settings: TrainSettings, run_dir: Path) -> dict[str, Any]:
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(settings, run_dir)
    summary = trainer.train()
    print(json.dumps(summary), file=sys.stderr if trainer.dist.rank else sys.stdout, flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    """`torchrun --nproc-per-node N -m training.loop --settings RUN/settings.json --run-dir RUN`:
    the same training outside submitit (DDP from torchrun's environment)."""
    import argparse

    from training.profiles import TrainSettings

    parser = argparse.ArgumentParser(prog="python -m training.loop", description=main.__doc__)
    parser.add_argument("--settings", type=Path, required=True, help="a run's settings.json")
    parser.add_argument("--run-dir", type=Path, required=True, help="the run folder (resumed from)")
    args = parser.parse_args(argv)
    train(TrainSettings.from_dict(json.loads(args.settings.read_text())), args.run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
