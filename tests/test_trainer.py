"""training/trainer.py faults: non-finite values are never saved, a resumed run takes the new
options and stops at the final step, SIGTERM saves and says how to resume, temporary files
of a killed save are cleaned up. (``train_set`` is a conftest fixture.)"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
import torch

import train_hybrid
from training import logdir as logdir_lib
from training import trainer as trainer_lib
from utils import distributed as dist_utils
from utils.config import load_config
from utils.io import FolderLockedError, folder_lock

TRAIN = ["--dataset", "synthetic", "--device", "cpu", "--height", "128", "--width", "128",
         "--resnet", "18", "--ndepths", "4", "--depth_min", "0.5", "--depth_max", "6",
         "--seq_len", "3", "--frame_interval", "2", "--num_workers", "0", "--summary_freq", "2",
         "--lr", "5e-4", "--warmup_iters", "10", "--seed", "7", "--save_iters", "0",
         "--log_level", "WARNING"]


@pytest.fixture()
def trainer(train_set, tmp_path):
    args = load_config("train", TRAIN + ["--datapath", train_set, "--logdir",
                                         str(tmp_path / "logs"), "--max_iters", "1"])
    return trainer_lib.Trainer(args, dist_utils.init_distributed("cpu"))


def test_init_cost_fusion_difference_starts_from_a_matching_cost(train_set, tmp_path):
    args = load_config("train", TRAIN + ["--datapath", train_set, "--logdir",
                                         str(tmp_path / "logs"), "--init_cost_fusion",
                                         "difference"])
    net = trainer_lib.Trainer(args, dist_utils.init_distributed("cpu")).model
    weight = getattr(net, "module", net).pre0[0].weight[..., 0, 0, 0]
    eye = torch.eye(weight.shape[0])
    assert torch.equal(weight, torch.cat([eye, -eye], dim=1))  # reference - warped source


# ------------------------------------------------------------------ non-finite values
def test_non_finite_batch_norm_statistics_are_never_saved(trainer):
    trainer.step = 17
    name, buffer = next((n, b) for n, b in trainer.model.named_buffers() if "running_var" in n)
    buffer[0] = float("inf")
    with pytest.raises(trainer_lib.NonFiniteStateError, match=f"step 17.*{re.escape(name)}"):
        trainer.save(epoch_end=False)
    assert not list(Path(trainer.args.logdir).glob("*.ckpt"))


@pytest.mark.slow
def test_non_finite_loss_stop_is_reached_by_a_diverging_run(train_set, tmp_path):
    with pytest.raises(trainer_lib.NonFiniteLossError, match="non-finite loss at step 2"):
        train_hybrid.main(TRAIN + ["--datapath", train_set, "--logdir", str(tmp_path),
                                   "--lr", "1e12", "--warmup_iters", "0", "--max_iters", "3"])


# ------------------------------------------------------- resume, interruption, flush
@pytest.mark.slow
def test_resume_applies_a_new_lr_and_stops_at_the_final_step(train_set, tmp_path):
    base = TRAIN + ["--datapath", train_set, "--logdir", str(tmp_path), "--epochs", "3"]
    first = train_hybrid.main(base + ["--max_iters", "1"])
    assert first["global_step"] == 1

    # killed after the final checkpoint, before the summary: the re-run trains nothing
    (tmp_path / "train_summary.json").unlink()
    again = train_hybrid.main(base + ["--max_iters", "1", "--resume", "True"])
    assert again["global_step"] == 1
    assert again["last_checkpoint"] == first["last_checkpoint"]

    resumed = train_hybrid.main(base + ["--max_iters", "2", "--resume", "True", "--lr", "1e-4",
                                        "--wd", "0"])
    state = torch.load(resumed["last_checkpoint"], map_location="cpu", weights_only=False)
    factor = 0.3333333333333333 * (1 - 2 / 10) + 2 / 10   # warm-up at iteration 2 of 10
    group = state["optimizer"]["param_groups"][0]
    assert group["lr"] == pytest.approx(1e-4 * factor)
    assert group["weight_decay"] == 0 and state["scheduler"]["base_lrs"] == [1e-4]
    assert state["config"]["lr"] == 1e-4
    assert "lr: 0.0001" in (tmp_path / "config.yaml").read_text()


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_says_how_to_resume(train_set, tmp_path,
                                                           monkeypatch, capsys):
    """The TensorBoard scalars are on disk too (flushed every summary), and the signal
    handlers are restored."""
    real = trainer_lib.Trainer.process_batch

    def preempted(self, batch, clip):
        if self.step == 0:  # during the first step
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, batch, clip)

    monkeypatch.setattr(trainer_lib.Trainer, "process_batch", preempted)
    argv = TRAIN + ["--datapath", train_set, "--logdir", str(tmp_path), "--max_iters", "2",
                    "--summary_freq", "1"]
    with pytest.raises(SystemExit) as stop:
        train_hybrid.cli(argv)
    assert stop.value.code == 128 + signal.SIGTERM
    message = capsys.readouterr().err
    assert "interrupted at step 1" in message and "--resume True" in message
    assert (tmp_path / "model_epoch000000_iter00000001.ckpt").is_file()
    # the writer was never closed, yet the scalars are on disk (flushed every summary)
    events = list(tmp_path.glob("events.out.tfevents.*"))
    assert len(events) == 1 and b"train/loss" in events[0].read_bytes()
    # the handlers are back: a later SIGTERM would end the process as usual
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    monkeypatch.setattr(trainer_lib.Trainer, "process_batch", real)
    resumed = train_hybrid.main(argv + ["--resume", "True"])
    assert resumed["global_step"] == 2


def test_temporary_files_of_a_killed_save_are_removed_at_the_next_start(trainer):
    """Only the trainer's own ``.<name>.ckpt.*.tmp`` files go; other .tmp files stay."""
    logdir = Path(trainer.args.logdir)
    stale = logdir / ".model_000000.ckpt.k3_x9ab2.tmp"
    stale.write_bytes(b"half a checkpoint")
    mine = logdir / "notes.tmp"
    mine.write_text("not ours")
    trainer_lib.Trainer(trainer.args, trainer.env)
    assert not stale.exists() and mine.exists()


@pytest.mark.slow
def test_a_resumed_run_keeps_every_logged_step_in_tensorboard(train_set, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    base = TRAIN + ["--datapath", train_set, "--logdir", str(tmp_path), "--summary_freq", "1"]
    train_hybrid.main(base + ["--max_iters", "2"])
    train_hybrid.main(base + ["--max_iters", "3", "--resume", "True"])
    events = EventAccumulator(str(tmp_path), purge_orphaned_data=True).Reload()
    assert [s.step for s in events.Scalars("train/loss")] == [1, 2, 3]


@pytest.mark.slow
def test_the_progress_bar_ends_at_max_iters(train_set, tmp_path, capsys):
    train_hybrid.main(TRAIN + ["--datapath", train_set, "--logdir", str(tmp_path),
                               "--max_iters", "2"])
    assert re.search(r"epoch 0: 100%.*\b2/2\b", capsys.readouterr().err)


@pytest.mark.slow
def test_keep_checkpoints_leaves_the_newest_and_other_files(train_set, tmp_path):
    (tmp_path / "model_best.ckpt").write_bytes(b"a user's file")
    base = TRAIN + ["--datapath", train_set, "--logdir", str(tmp_path), "--save_iters", "1",
                    "--keep_checkpoints", "1"]
    first = train_hybrid.main(base + ["--max_iters", "2"])
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == [
        "model_best.ckpt", Path(first["last_checkpoint"]).name]
    again = train_hybrid.main(base + ["--max_iters", "3", "--resume", "True"])
    assert again["global_step"] == 3 and len(list(tmp_path.glob("*.ckpt"))) == 2


# ------------------------------------------------------------- one run per logdir
def test_a_second_run_into_a_locked_logdir_is_refused_naming_the_first(train_set, tmp_path):
    with folder_lock(str(tmp_path), "the first run"):
        with pytest.raises(FolderLockedError, match="in use by another run.*the first run"):
            train_hybrid.main(TRAIN + ["--datapath", train_set, "--logdir", str(tmp_path),
                                       "--max_iters", "1"])
    assert not list(tmp_path.glob("events.out.*")) and not (tmp_path / "config.yaml").exists()


def test_a_fresh_run_over_another_runs_checkpoints_is_refused(train_set, tmp_path):
    (tmp_path / "model_000002.ckpt").write_bytes(b"another run's weights")
    with pytest.raises(logdir_lib.LogdirInUseError,
                       match="model_000002.ckpt.*--resume True.*--logdir.*--overwrite True"):
        train_hybrid.main(TRAIN + ["--datapath", train_set, "--logdir", str(tmp_path),
                                   "--max_iters", "1"])
    assert (tmp_path / "model_000002.ckpt").read_bytes() == b"another run's weights"
    assert not (tmp_path / ".lock").exists()


def test_overwrite_replaces_the_old_run_and_the_lock_is_held_throughout(train_set, tmp_path,
                                                                        monkeypatch):
    (tmp_path / "model_000002.ckpt").write_bytes(b"another run's weights")
    (tmp_path / "model_best.ckpt").write_bytes(b"a user's file")
    real = trainer_lib.Trainer.process_batch

    def second_run_meanwhile(self, batch, clip):
        with pytest.raises(FolderLockedError, match="train_hybrid.py"):
            with folder_lock(str(tmp_path), "a second run"):
                pass
        return real(self, batch, clip)

    monkeypatch.setattr(trainer_lib.Trainer, "process_batch", second_run_meanwhile)
    summary = train_hybrid.main(TRAIN + ["--datapath", train_set, "--logdir", str(tmp_path),
                                         "--max_iters", "1", "--overwrite", "True"])
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == [
        "model_best.ckpt", Path(summary["last_checkpoint"]).name]
    assert not (tmp_path / ".lock").exists()


def test_only_rank_0_locks_and_every_rank_stops_when_it_cannot(tmp_path, monkeypatch):
    args = load_config("train", ["--logdir", str(tmp_path / "logs")])
    rank1 = dist_utils.DistEnv(1, 1, 2, torch.device("cpu"))
    monkeypatch.setattr(dist_utils, "gather_objects", lambda obj, env: ["logs is in use", obj])
    with pytest.raises(logdir_lib.LogdirInUseError, match="rank 0 could not start: logs is"):
        with logdir_lib.claimed_logdir(args, rank1):
            pass
    monkeypatch.setattr(dist_utils, "gather_objects", lambda obj, env: [None, obj])
    with folder_lock(str(tmp_path / "logs"), "rank 0"):
        with logdir_lib.claimed_logdir(args, rank1):  # no second lock: no deadlock
            pass
