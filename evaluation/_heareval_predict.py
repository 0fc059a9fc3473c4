"""Launch heareval's own predictions runner with today's fixes applied in this process only.

    python -m hear_models.evaluation._heareval_predict EMB_TASK_DIR... [heareval's options]

takes exactly the arguments of ``python -m heareval.predictions.runner`` (heareval
2021.1.3: ``--grid-points``, ``--gpus``, ``--in-memory``, ``--deterministic``, ``--grid``,
``--shuffle``) and runs heareval's code unchanged in substance: its grids, its
training loop, its metrics. Before heareval is imported, :func:`apply_fixes` patches,
in memory and in this process only (site-packages is never edited):

1. ``tensorflow``: heareval's predictions code does not need it; where it is absent a
   stub module (``Module``, ``test.is_gpu_available``) is put in ``sys.modules`` so any
   stray ``import tensorflow`` succeeds.
2. pytorch-lightning: heareval's trainer code (``gpus=``, ``validation_epoch_end``) needs
   PL < 2; a clear error says so instead of a deep traceback.
3. The event-task epoch bug (hear-eval-kit #432): heareval sets
   ``trainer.fit_loop.current_epoch = best_epoch`` before testing so that the event
   post-processing chosen at that epoch is used. PL >= 1.8 has no such attribute on
   ``FitLoop`` (it became ``epoch_progress.current.completed``), so the assignment made a
   plain attribute that nothing reads, and every event task died at test time with
   ``KeyError``. We give ``FitLoop`` a ``current_epoch`` property whose setter writes
   ``epoch_progress.current.completed`` (what ``trainer.current_epoch`` reads in PL 1.9).
4. On GPU machines heareval's ``gpu_max_mem.device_name`` calls ``.decode()`` on what
   current nvidia-ml-py already returns as ``str``; it is wrapped to accept both.

The parent process (:mod:`hear_models.evaluation.predict`) also sets, for this process
only, ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` (heareval's own checkpoints are pickles with
``nn`` classes, refused by torch >= 2.6's ``weights_only`` default; these files are
written by heareval moments before in this run, never user-supplied) and
``CUBLAS_WORKSPACE_CONFIG`` (needed by ``--deterministic True`` on CUDA).
"""

from __future__ import annotations

import sys
import types
from typing import List, Optional


def _tensorflow_stub() -> None:
    try:
        import tensorflow  # noqa: F401  (the real one, or the project's stand-in)
        return
    except ImportError:
        pass
    tf = types.ModuleType("tensorflow")
    tf.__doc__ = "in-memory stub installed by hear_models.evaluation._heareval_predict"

    class Module:  # nothing is an instance: only torch models are evaluated
        pass

    test = types.ModuleType("tensorflow.test")
    test.is_gpu_available = lambda *a, **k: True
    tf.Module = Module
    tf.test = test
    sys.modules["tensorflow"] = tf
    sys.modules["tensorflow.test"] = test


def _check_lightning() -> str:
    import pytorch_lightning as pl

    major = int(pl.__version__.split(".")[0])
    if major >= 2:
        raise SystemExit(f"pytorch-lightning {pl.__version__} is installed; heareval 2021.1.3 needs "
                         "pytorch-lightning<2 (1.9.5 works): pip install 'pytorch-lightning==1.9.5'")
    return pl.__version__


def fix_fit_loop_current_epoch() -> bool:
    """Give PL's FitLoop a writable ``current_epoch``; returns True if it was needed."""
    from pytorch_lightning.loops.fit_loop import FitLoop

    existing = FitLoop.__dict__.get("current_epoch")
    if isinstance(existing, property) and existing.fset is not None:
        return False  # PL < 1.8 (or already fixed): the assignment works

    def _get(self) -> int:
        return self.epoch_progress.current.completed

    def _set(self, value: int) -> None:
        self.epoch_progress.current.completed = int(value)

    FitLoop.current_epoch = property(_get, _set, doc="hear_models fix of hear-eval-kit #432")
    return True


def _fix_gpu_max_mem() -> None:
    import heareval.gpu_max_mem as gpu_max_mem

    if not hasattr(gpu_max_mem, "nvmlDeviceGetName"):
        return  # CPU: device_name() returns "cpu"

    def device_name(device_index: int = 0) -> str:
        name = gpu_max_mem.nvmlDeviceGetName(gpu_max_mem.nvmlDeviceGetHandleByIndex(device_index))
        return name.decode("utf-8") if isinstance(name, bytes) else str(name)

    gpu_max_mem.device_name = device_name


def apply_fixes(epoch_fix: bool = True) -> dict:
    """Patch this process so heareval's predictions run today; returns what was done."""
    _tensorflow_stub()
    done = {"pytorch_lightning": _check_lightning()}
    done["fit_loop_current_epoch"] = fix_fit_loop_current_epoch() if epoch_fix else "skipped"
    _fix_gpu_max_mem()
    return done


def main(argv: Optional[List[str]] = None) -> int:
    import os

    argv = list(sys.argv[1:] if argv is None else argv)
    # HEAR_MODELS_NO_EPOCH_FIX=1 runs heareval as published (to show the bug in tests)
    done = apply_fixes(epoch_fix=os.environ.get("HEAR_MODELS_NO_EPOCH_FIX") != "1")
    print(f"hear_models: heareval predictions with fixes {done}", flush=True)
    from heareval.predictions.runner import runner

    try:
        runner.main(args=argv, prog_name="heareval.predictions.runner")
    except SystemExit as e:  # click's exit
        return int(e.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
