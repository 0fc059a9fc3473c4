"""Stopping and resuming trainings the way schedulers and users do it: SIGTERM to the whole
process group (``timeout``, SLURM's scancel), data-loader workers included; Ctrl-C; files
left by a killed run; ``keep_checkpoints`` across resumes; the progress bar after a resume.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import need  # noqa: E402

need("lightning")

from hear_models.training.config import load_config

from .test_training import TINY, _write

WORKERS = [o for o in TINY if not o.startswith("data.num_workers")] + ["data.num_workers=2"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    for i in range(6):
        _write(d / f"c{i}.wav", 0.5 + 0.1 * i, 16000, 300 + 200 * i, i)
    return d


def _logged_steps(log):
    if not log.is_file():
        return []
    return [json.loads(x)["step"] for x in log.read_text().splitlines() if x.strip()]


def test_sigterm_to_the_process_group_with_workers_then_resume(clips, tmp_path):
    """``timeout -s TERM`` / scancel signal every process of the run: the data-loader workers
    ignore it, the main process finishes its step, writes last.ckpt and exits 143; nothing of
    the run is left; --resume auto then ends with exactly the weights of a run never stopped."""
    from hear_models.training.engine import fit

    max_steps = 40
    overrides = WORKERS + [f"data.source={clips}", f"trainer.max_steps={max_steps}",
                           "trainer.checkpoint_every=1000"]
    out = tmp_path / "stopped"
    cmd = [sys.executable, "-m", "hear_models.cli", "train", "maskspec_tiny_pretrain", *overrides,
           f"trainer.out_dir={out}"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    t0 = time.time()
    while max(_logged_steps(out / "log.jsonl"), default=0) < 3:
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < 240, "the run did not reach step 3"
        time.sleep(0.02)
    workers = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split()
    os.killpg(proc.pid, signal.SIGTERM)  # the whole group: main process and workers
    _, err = proc.communicate(timeout=120)
    step = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    print(f"\nprocess-group SIGTERM: exit status {proc.returncode}, {len(workers)} processes in the group, "
          f"stopped at step {step} of {max_steps}")
    assert proc.returncode == 143, err
    assert len(workers) >= 3  # the main process and its 2 workers got the signal
    assert "killed by signal" not in err and "Traceback" not in err, err
    assert f"SIGTERM at step {step}" in err and f"--resume {out / 'checkpoints' / 'last.ckpt'}" in err, err
    assert 3 <= step < max_steps and not (out / "checkpoints" / "final.ckpt").exists()
    with pytest.raises(ProcessLookupError):  # no worker outlived the run
        os.killpg(proc.pid, 0)

    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    cfg = load_config("maskspec_tiny_pretrain", overrides + [f"trainer.out_dir={tmp_path / 'whole'}"])
    fit(cfg)
    a = torch.load(tmp_path / "whole" / "checkpoints" / "final.ckpt", weights_only=True)
    b = torch.load(out / "checkpoints" / "final.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == max_steps
    assert a["state_dict"].keys() == b["state_dict"].keys()
    diff = max(float((a["state_dict"][k].float() - b["state_dict"][k].float()).abs().max()) for k in a["state_dict"])
    print(f"resumed from step {step} to {max_steps}: max abs weight difference to the uninterrupted run {diff:g}")
    assert diff == 0.0


def test_ctrl_c_stops_like_sigterm_with_status_130(clips, tmp_path):
    from lightning.pytorch.callbacks import Callback

    from hear_models.training.engine import TrainingInterrupted, fit

    class CtrlC(Callback):
        def on_train_batch_start(self, trainer, *a):
            if trainer.global_step == 2:
                os.kill(os.getpid(), signal.SIGINT)

    cfg = load_config("maskspec_tiny_pretrain", TINY + [f"data.source={clips}", "trainer.max_steps=6",
                                                        f"trainer.out_dir={tmp_path}"])
    with pytest.raises(TrainingInterrupted, match="SIGINT at step 3") as e:
        fit(cfg, callbacks=[CtrlC()])
    assert e.value.status == 130 and "--resume " in str(e.value)
    assert torch.load(e.value.checkpoint, weights_only=True)["global_step"] == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back after the run


def test_stale_temporary_files_go_and_keep_checkpoints_counts_across_resumes(clips, tmp_path):
    """A run killed while writing leaves ``*.ckpt.tmp-PID``: the next start removes it. With
    keep_checkpoints=2, a resumed run keeps 2 step files in all, counting those of the runs
    before it, also one the resumed checkpoint does not list (a run killed between writing
    a step file and last.ckpt, or stopped by SIGTERM on a checkpoint step)."""
    from lightning.pytorch.callbacks import Callback

    from hear_models.training.engine import TrainingInterrupted, fit

    run = tmp_path / "run"
    ck = run / "checkpoints"

    def cfg(steps):
        return load_config("maskspec_tiny_pretrain", TINY + [
            f"data.source={clips}", f"trainer.max_steps={steps}", "trainer.checkpoint_every=2",
            "trainer.keep_checkpoints=2", f"trainer.out_dir={run}"])

    class TermAt(Callback):
        def on_train_batch_start(self, trainer, *a):
            if trainer.global_step == 5:  # step 6: a checkpoint step
                os.kill(os.getpid(), signal.SIGTERM)

    ck.mkdir(parents=True)
    (ck / "step0000002.ckpt.tmp-4242").write_bytes(b"half a checkpoint")
    with pytest.raises(TrainingInterrupted, match="at step 6"):
        fit(cfg(10), callbacks=[TermAt()])
    assert not list(ck.glob("*.tmp-*"))
    assert sorted(p.name for p in ck.glob("step*.ckpt")) == ["step0000004.ckpt", "step0000006.ckpt"]
    fit(cfg(10), resume="auto")
    assert sorted(p.name for p in ck.glob("step*.ckpt")) == ["step0000008.ckpt", "step0000010.ckpt"]
    fit(cfg(14), resume=str(ck / "final.ckpt"))
    assert sorted(p.name for p in ck.glob("step*.ckpt")) == ["step0000012.ckpt", "step0000014.ckpt"]
    # the run folder moved (another mount, a copy to scratch): Lightning's list names the old
    # paths and is dropped; the files on disk still count
    shutil.move(str(run), str(tmp_path / "moved"))
    run, ck = tmp_path / "moved", tmp_path / "moved" / "checkpoints"
    fit(cfg(18), resume="auto")
    assert sorted(p.name for p in ck.glob("step*.ckpt")) == ["step0000016.ckpt", "step0000018.ckpt"]


def test_progress_bar_counts_steps_to_max_steps_after_resume(clips, tmp_path):
    from lightning.pytorch.callbacks import Callback

    from hear_models.training.engine import StepProgressBar, fit

    seen = {}

    class Look(Callback):
        def _bar(self, trainer):
            bar = next(c for c in trainer.callbacks if isinstance(c, StepProgressBar)).train_progress_bar
            return bar.n, bar.total

        def on_train_batch_start(self, trainer, *a):
            seen.setdefault("first", self._bar(trainer))

        def on_train_end(self, trainer, *a):
            seen["last"] = self._bar(trainer)

    def cfg(steps):
        return load_config("maskspec_tiny_pretrain", TINY + [
            f"data.source={clips}", f"trainer.max_steps={steps}", "trainer.progress_bar=true",
            f"trainer.out_dir={tmp_path}"])

    fit(cfg(3))
    fit(cfg(5), resume="auto", callbacks=[Look()])
    assert seen["first"] == (3, 5) and seen["last"] == (5, 5)  # Lightning's own: (1, None), "1/?"
