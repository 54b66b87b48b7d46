"""The training loop: monodepth2-style ``Trainer`` (set-up in ``__init__``, then ``train``
-> epochs -> batches), its checkpoints and its reaction to signals and non-finite values."""

import contextlib
import json
import glob
import logging
import os
import signal
import threading
import time

import numpy as np
import torch
from tensorboardX import SummaryWriter
from torch.utils.data import DataLoader
from tqdm import tqdm

from models import precision
from models.depthnet import check_inputs
from training.components import (amp_dtype, build_dataset, build_model, grad_scaler,
                                  log_native_equivalents, rng_state, set_rng_state, wrap_ddp)
from utils import checkpoint as ckpt_io
from utils import distributed as dist_utils
from utils.config import save_config
from utils.io import remove_stale_temps, save_json
from utils.lr_schedule import build_scheduler
from utils.visualization import colorize_depth, colorize_prob, image_to_uint8

log = logging.getLogger("train")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf: training stops instead of corrupting the weights."""


class NonFiniteStateError(RuntimeError):
    """A parameter or buffer became NaN/inf: the checkpoint is not written."""


class TrainingInterrupted(RuntimeError):
    """SIGINT/SIGTERM: a checkpoint of the current step was written; re-run to resume."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class Trainer:
    """monodepth2-style trainer: set-up in ``__init__``, then ``train`` -> epochs -> batches."""

    def __init__(self, args, env: dist_utils.DistEnv):
        self.args, self.env = args, env
        # Rank 0 scans the scenes and writes the index cache; the others then read it.
        with dist_utils.main_process_first(env):
            self.dataset = build_dataset(args, reloadscan=args.reloadscan and env.is_main)
        self.sampler = dist_utils.ResumableSampler(self.dataset, args.batch_size, env, args.seed)
        self.loader = DataLoader(self.dataset, args.batch_size, sampler=self.sampler,
                                 num_workers=args.num_workers, drop_last=True,
                                 pin_memory=args.pin_m or env.device.type == "cuda",
                                 worker_init_fn=_ignore_stop_signals)
        self.iters_per_epoch = self.sampler.num_samples // args.batch_size
        if self.iters_per_epoch == 0:
            raise ValueError(f"{len(self.dataset)} training windows make no batch of "
                             f"{args.batch_size} per process")

        if env.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: pick the fastest kernels
        self.amp_dtype = amp_dtype(args.train)
        log_native_equivalents(args.train, self.amp_dtype)
        # Every module conversion (SyncBatchNorm) happens in build_model, before the
        # optimizer takes the parameters.
        self.model = build_model(args.model, args.train, env)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.trainable, lr=args.lr, betas=(0.9, 0.999),
                                          weight_decay=args.wd)
        self.scheduler = build_scheduler(self.optimizer, self.iters_per_epoch, args.lrepochs,
                                         args.warmup_factor, args.warmup_iters)
        self.scaler = grad_scaler(args.train, env.device, self.amp_dtype)
        self.epoch, self.batches_done, self.step = 0, 0, 0
        self.signal_received, self.stop_requested = None, False
        self.last_checkpoint = None
        self.loss_history = []  # this run's per-step loss (mean over ranks)
        self._load_weights()
        self.net = wrap_ddp(self.model, env)

        self.writer = None
        if env.is_main:
            os.makedirs(args.logdir, exist_ok=True)
            for path in remove_stale_temps(args.logdir):
                log.info("removed %s, left by a killed checkpoint write", path)
            save_config(args, os.path.join(args.logdir, "config.yaml"))
            # A resumed run drops what a crashed run logged after its checkpoint, not the
            # checkpoint's own step (logged before it was saved).
            self.writer = SummaryWriter(args.logdir,
                                        purge_step=self.step + 1 if self.step else None)
        log.info("%d training windows, %d iterations per epoch per process, world size %d",
                 len(self.dataset), self.iters_per_epoch, env.world_size)

    # ------------------------------------------------------------------ set-up
    def _load_weights(self) -> None:
        args = self.args
        if args.resume:
            path = ckpt_io.latest_checkpoint(args.logdir)
            if path is None:
                raise FileNotFoundError(f"--resume: no checkpoint of this project's names "
                                        f"(model_<epoch>.ckpt, model_epoch<E>_iter<S>.ckpt) "
                                        f"in {args.logdir}")
            self._restore(path)
        elif args.loadckpt:
            prefixes = ckpt_io.FEATURE_NET_PREFIXES if args.restore_part else None
            ckpt_io.load_checkpoint(self.model, args.loadckpt, prefixes=prefixes)
            log.info("loaded %s from %s", "feature nets" if prefixes else "weights",
                     args.loadckpt)
        if not (args.resume or args.loadckpt or args.pretrained_resnet):
            log.info("ResNet context encoder: random initialisation (no --pretrained_resnet "
                     "file; the paper starts from ImageNet weights)")

    def _restore(self, path: str) -> None:
        ckpt = ckpt_io.load_checkpoint(self.model, path)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if "global_step" in ckpt:  # ours: the exact position, schedule and RNG
            self.epoch, self.batches_done, self.step = (ckpt["epoch"], ckpt["batches_done"],
                                                        ckpt["global_step"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            self.scaler.load_state_dict(ckpt["scaler"])
            set_rng_state(ckpt["rng"])
        else:  # an official checkpoint: it was written at the end of its epoch
            self.epoch, self.batches_done = ckpt["epoch"], self.iters_per_epoch
            self.step = (ckpt["epoch"] + 1) * self.iters_per_epoch
            self.scheduler.last_epoch = self.step - 1
            self.scheduler.step()
        if self.batches_done >= self.iters_per_epoch:
            self.epoch, self.batches_done = self.epoch + 1, 0
        self._apply_optimizer_options(ckpt.get("config") or {})
        self.last_checkpoint = path
        log.info("resumed from %s at epoch %d, batch %d (step %d)", path, self.epoch,
                 self.batches_done, self.step)

    def _apply_optimizer_options(self, trained: dict) -> None:
        """Run a resumed training with this run's --lr and --wd, not the checkpoint's.

        The optimizer and scheduler states carry the values they were created with; the
        schedule's position is kept and only its base value changes, so the recorded
        config.yaml says what runs from here on.
        """
        args, scheduler = self.args, self.scheduler
        for key in ("lr", "wd"):
            if key in trained and float(trained[key]) != float(getattr(args, key)):
                log.info("resuming with --%s %g (the checkpoint was trained with %g)", key,
                         getattr(args, key), float(trained[key]))
        factor = scheduler.lr_lambdas[0](scheduler.last_epoch)
        scheduler.base_lrs = [args.lr for _ in self.optimizer.param_groups]
        for group in self.optimizer.param_groups:
            group.update(initial_lr=args.lr, lr=args.lr * factor, weight_decay=args.wd)
        scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    # ---------------------------------------------------------------- training
    def train(self) -> dict:
        """Run to --epochs (or --max_iters); SIGINT/SIGTERM save a checkpoint and stop.

        Raises:
            TrainingInterrupted: after the checkpoint of the interrupted step is written.
        """
        start, args = time.time(), self.args
        stopped = bool(args.max_iters) and self.step >= args.max_iters  # resumed at the end
        with self._catch_signals():
            while self.epoch < args.epochs and not stopped:
                stopped = self.run_epoch()
        in_sync = dist_utils.replicas_in_sync(self.model, self.env)
        if not in_sync:
            raise RuntimeError("model replicas diverged across ranks")
        tenth = max(1, len(self.loss_history) // 10)
        summary = {"global_step": self.step, "epoch": self.epoch,
                   "world_size": self.env.world_size, "replicas_in_sync": in_sync,
                   "last_checkpoint": self.last_checkpoint, "seconds": time.time() - start,
                   "loss_first_tenth": float(np.mean(self.loss_history[:tenth] or [np.nan])),
                   "loss_last_tenth": float(np.mean(self.loss_history[-tenth:] or [np.nan]))}
        if self.env.is_main:
            save_json(summary, os.path.join(args.logdir, "train_summary.json"))
            self.writer.close()
        return summary

    @contextlib.contextmanager
    def _catch_signals(self):
        """Turn SIGINT/SIGTERM (Ctrl-C, cluster pre-emption) into a stop after this step.

        A second signal is not caught: it ends the process at once.
        """
        self.signal_received = None
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set from the main thread
            return

        def note(signum, frame):
            self.signal_received = signum
            for sig in previous:
                signal.signal(sig, previous[sig])
            log.warning("%s received: stopping after this step (again to abort at once)",
                        signal.Signals(signum).name)

        previous = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def run_epoch(self) -> bool:
        """Train the rest of ``self.epoch``; returns True when --max_iters stopped it."""
        args = self.args
        self.sampler.set_position(self.epoch, self.batches_done)
        clip = args.clip_before if self.epoch < args.clip_epoch else args.clip_after
        total = self.iters_per_epoch
        if args.max_iters:  # the bar ends where --max_iters stops this epoch
            total = min(total, self.batches_done + max(0, args.max_iters - self.step))
        bar = tqdm(total=total, initial=self.batches_done,
                   desc=f"epoch {self.epoch}", disable=not self.env.is_main, dynamic_ncols=True)
        tic = time.time()
        for batch in self.loader:
            data_time = time.time() - tic
            losses, outputs = self.process_batch(batch, clip)
            self.loss_history.append(losses["loss"])
            self.step += 1
            self.batches_done += 1
            self.scheduler.step()
            step_time = time.time() - tic
            samples_per_s = args.batch_size * self.env.world_size / step_time
            bar.update(1)
            bar.set_postfix(loss=f"{losses['loss']:.3f}", samples_s=f"{samples_per_s:.2f}")
            if self.step % args.summary_freq == 0:
                self.log_scalars(losses, data_time, step_time, samples_per_s)
                if self.step % (10 * args.summary_freq) == 0:
                    self.log_images(batch, outputs)
            if args.log_samples:
                self.record_samples(batch)
            if self.stop_requested:
                self.save(epoch_end=False)
                bar.close()
                name = signal.Signals(self.signal_received or signal.SIGTERM).name
                raise TrainingInterrupted(
                    f"{name}: interrupted at step {self.step}; checkpoint "
                    f"{self.last_checkpoint}; re-run with --resume True to continue",
                    self.signal_received or signal.SIGTERM)
            if args.max_iters and self.step >= args.max_iters:
                self.save(epoch_end=False)
                bar.close()
                return True
            if args.save_iters and self.step % args.save_iters == 0:
                self.save(epoch_end=False)
            tic = time.time()
        bar.close()
        if (self.epoch + 1) % args.save_freq == 0 or self.epoch + 1 == args.epochs:
            self.save(epoch_end=True)
        self.epoch, self.batches_done = self.epoch + 1, 0
        return False

    def process_batch(self, batch: dict, clip: float):
        """One optimisation step; returns (losses averaged over ranks, outputs).

        The host waits for the device once per step, after the backward pass: one reduction
        over ranks (:func:`utils.distributed.reduce_step`) gives the losses, whether any
        rank's loss is non-finite (then training stops before the optimizer applies the
        gradients) and whether a signal reached any rank (all ranks stop after this step).
        """
        self.net.train()
        self.model.begin_step()
        self.optimizer.zero_grad(set_to_none=True)
        device = self.env.device
        check_inputs(batch["imgs"], batch["cam_poses"], batch["cam_intr"])  # on the host
        imgs, poses, intr = (batch[k].to(device, non_blocking=True)
                             for k in ("imgs", "cam_poses", "cam_intr"))
        sample = {k: batch[k].to(device, non_blocking=True) for k in ("dmaps", "dmasks")}
        with precision.autocast(device.type, self.amp_dtype):
            outputs, losses = self.net(imgs, poses, intr, sample, mode="train",
                                       inputs_checked=True)
        self.scaler.scale(losses["loss"]).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.trainable, clip, norm_type=2)
        summary = dist_utils.reduce_step(losses, losses["loss"],
                                         self.signal_received is not None, self.env)
        if not summary.all_finite:
            self._raise_non_finite(losses["loss"], batch)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.stop_requested = summary.stop
        return summary.losses, outputs

    def _raise_non_finite(self, loss: torch.Tensor, batch: dict) -> None:
        """Stop every rank, naming the samples of the ranks whose loss is non-finite."""
        finite = bool(torch.isfinite(loss).item())
        reports = dist_utils.gather_objects(None if finite else _frame_paths(batch), self.env)
        bad = [f"rank {r}: {paths}" for r, paths in enumerate(reports) if paths is not None]
        raise NonFiniteLossError(
            f"non-finite loss at step {self.step + 1} (epoch {self.epoch}, batch "
            f"{self.batches_done}); samples: {'; '.join(bad)}; last good checkpoint: "
            f"{self.last_checkpoint or 'none written yet'}")

    # ----------------------------------------------------------------- logging
    def log_scalars(self, losses: dict, data_time: float, step_time: float, samples_per_s):
        if not self.env.is_main:
            return
        for name, value in losses.items():
            self.writer.add_scalar(f"train/{name}", value, self.step)
        self.writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], self.step)
        self.writer.add_scalar("time/step_s", step_time, self.step)
        self.writer.add_scalar("time/data_s", data_time, self.step)
        self.writer.add_scalar("time/samples_per_s", samples_per_s, self.step)
        self.writer.flush()  # a killed run keeps its curves

    def log_images(self, batch: dict, outputs: dict) -> None:
        if not self.env.is_main:
            return
        add = lambda tag, img: self.writer.add_image(tag, img, self.step, dataformats="HWC")  # noqa: E731
        for i in range(batch["imgs"].shape[1]):
            add(f"train/img{i}", image_to_uint8(batch["imgs"][0, i]))
        for t in range(batch["imgs"].shape[1] - 2):
            add(f"train/depth_gt_img{t}", colorize_depth(batch["dmaps"][0, t + 1]))
            for s in range(4):
                add(f"train/depth_s{s}_img{t}", colorize_depth(outputs[("depth", t, s)][0]))
            add(f"train/init_prob_img{t}", colorize_prob(outputs[("init_prob", t)][0]))
            add(f"train/fused_prob_img{t}", colorize_prob(outputs[("fused_prob", t)][0]))
        self.writer.flush()

    def record_samples(self, batch: dict) -> None:
        """Append which windows each rank trained on at this step (logdir/samples.jsonl)."""
        firsts = dist_utils.gather_objects(list(batch["img_paths"][0]), self.env)
        if self.env.is_main:
            with open(os.path.join(self.args.logdir, "samples.jsonl"), "a") as f:
                f.write(json.dumps({"step": self.step, "first_frames_by_rank": firsts}) + "\n")

    # ------------------------------------------------------------- checkpoints
    def save(self, epoch_end: bool) -> None:
        """Checkpoint (rank 0, atomically) in the official format plus the training state."""
        if not self.env.is_main:
            return
        name = (f"model_{self.epoch:06d}.ckpt" if epoch_end
                else f"model_epoch{self.epoch:06d}_iter{self.step:08d}.ckpt")
        path = os.path.join(self.args.logdir, name)
        self._check_finite_state(path)
        ckpt_io.save_checkpoint(path, self.model, self.optimizer, epoch=self.epoch,
                                batches_done=self.batches_done, global_step=self.step,
                                scheduler=self.scheduler.state_dict(),
                                scaler=self.scaler.state_dict(), rng=rng_state(),
                                config=vars(self.args))
        self.last_checkpoint = path
        log.info("saved %s", path)
        if self.args.keep_checkpoints:
            self._remove_older_checkpoints(self.args.keep_checkpoints)

    def _remove_older_checkpoints(self, keep: int) -> None:
        """Delete all but the newest ``keep`` checkpoints of the names training writes (a
        resume needs only the newest; other files in --logdir are never touched)."""
        ours = [p for p in glob.glob(os.path.join(self.args.logdir, "*.ckpt"))
                if ckpt_io.checkpoint_position(p) is not None]
        for old in sorted(ours, key=ckpt_io.checkpoint_position)[:-keep]:
            os.remove(old)
            log.debug("removed %s (--keep_checkpoints %d)", old, keep)

    def _check_finite_state(self, path: str) -> None:
        """Refuse to save non-finite weights or statistics (the loss can stay finite while
        batch-norm statistics overflow, and such a checkpoint predicts nonsense)."""
        named = [*self.model.named_parameters(), *self.model.named_buffers()]
        bad = [name for name, t in named
               if t.is_floating_point() and not bool(torch.isfinite(t).all())]
        if bad:
            raise NonFiniteStateError(
                f"at step {self.step} (epoch {self.epoch}) {len(bad)} tensor(s) hold non-finite "
                f"values, e.g. {bad[0]}; {path} was not written (last good checkpoint: "
                f"{self.last_checkpoint or 'none written yet'}). Lower --lr.")


def _ignore_stop_signals(worker_id: int) -> None:
    """Data-loading workers leave Ctrl-C/SIGTERM to the trainer, which stops cleanly after
    the current step (a worker ended by the signal would instead abort the run)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _frame_paths(batch: dict) -> list:
    """The frames of every window in a batch: ``img_paths`` is collated frame-major."""
    return [list(window) for window in zip(*batch["img_paths"])]
