"""heareval's own runners, run today: ``hear-models heareval predictions|embeddings``.

    hear-models heareval predictions EMB_TASK_DIR... [--grid default|fast|faster]
        [--grid-points N] [--gpus JSON] [--deterministic BOOL] [--in-memory BOOL] [--shuffle BOOL]
    hear-models heareval embeddings MODULE --model PATH [--tasks-dir DIR] [--task NAME|all]
        [--embeddings-dir DIR] [--model-options JSON]

take exactly the arguments of ``python -m heareval.predictions.runner`` and
``python -m heareval.embeddings.runner`` (heareval 2021.1.3) and run heareval's code
unchanged in substance: its grids, training loop, metrics, file formats. Before heareval
is imported, :func:`apply_fixes` patches, in memory and in this process only (nothing in
site-packages is edited, no environment variable is needed from the user):

1. ``tensorflow``: heareval imports it only to look for GPUs and to test
   ``isinstance(model, tf.Module)``; where it is absent (and the project's stand-in
   ``hear-models-tf-shim`` is not installed) a stub module with those two names goes
   into ``sys.modules``.
2. pytorch-lightning: heareval's trainer code (``gpus=``, ``validation_epoch_end``) needs
   PL < 2; a clear error says so instead of a deep traceback.
3. The event-task epoch bug (hear-eval-kit #432): heareval sets
   ``trainer.fit_loop.current_epoch = best_epoch`` before testing so that the event
   post-processing chosen at that epoch is used. PL >= 1.8 has no such attribute on
   ``FitLoop`` (it became ``epoch_progress.current.completed``), so the assignment made a
   plain attribute that nothing reads, and every event task died at test time with
   ``KeyError``. ``FitLoop`` gets a ``current_epoch`` property whose setter writes
   ``epoch_progress.current.completed`` (what ``trainer.current_epoch`` reads in PL 1.9).
4. torch >= 2.6 loads with ``weights_only=True`` by default, and heareval's
   ``torch.load(best_model_path)`` of the checkpoint it wrote moments before failed
   (``Unsupported global``: its hyper-parameters hold classes and functions of its grid).
   Exactly those names (the callables in heareval's grids) are allow-listed with
   ``torch.serialization.add_safe_globals``: the load stays ``weights_only``.
5. On GPU machines heareval's ``gpu_max_mem.device_name`` calls ``.decode()`` on what
   current nvidia-ml-py already returns as ``str``; it is wrapped to accept both.
6. ``--deterministic True`` on CUDA needs ``CUBLAS_WORKSPACE_CONFIG``; it is set in this
   process (unless set already) before CUDA starts.
"""

from __future__ import annotations

import os
import sys
import types
from typing import List, Optional, Sequence

USAGE = """usage: hear-models heareval predictions EMB_TASK_DIR... [heareval's options]
       hear-models heareval embeddings MODULE --model PATH [heareval's options]

heareval's own runners with the fixes they need today applied in this process
(see `hear-models heareval predictions --help` for heareval's options).
For --model, `hear-models weights path NAME` prints a weights file of a registered model."""


def _tensorflow_stub() -> str:
    try:
        import tensorflow  # noqa: F401  (the real one, or the project's stand-in)
        return "present"
    except ImportError:
        pass
    tf = types.ModuleType("tensorflow")
    tf.__doc__ = "in-memory stub installed by hear_models.evaluation.heareval_runners"

    class Module:  # nothing is an instance: only torch models are evaluated
        pass

    test = types.ModuleType("tensorflow.test")
    # heareval raises if torch sees a GPU that tensorflow does not: without tensorflow,
    # there is nothing to disagree with
    test.is_gpu_available = lambda *a, **k: True
    tf.Module = Module
    tf.test = test
    sys.modules["tensorflow"] = tf
    sys.modules["tensorflow.test"] = test
    return "stub"


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


def heareval_checkpoint_globals() -> list:
    """What heareval's own predictor checkpoints pickle besides tensors and plain
    containers: the classes and functions of its hyper-parameter grids
    (``embedding_norm``, ``hidden_norm``, ``initialization``, ``optim``)."""
    import heareval.predictions.task_predictions as tp

    found = []
    for grid in (tp.PARAM_GRID, tp.FAST_PARAM_GRID, tp.FASTER_PARAM_GRID,
                 *tp.TASK_SPECIFIC_PARAM_GRID.values()):
        for values in grid.values():
            for v in values:
                if callable(v) and v not in found:
                    found.append(v)
    return found


def allow_heareval_checkpoints() -> int:
    """Allow-list heareval's checkpoint contents for ``torch.load``'s weights_only mode."""
    import torch

    names = heareval_checkpoint_globals()
    torch.serialization.add_safe_globals(names)
    return len(names)


def _fix_gpu_max_mem() -> None:
    import heareval.gpu_max_mem as gpu_max_mem

    if not hasattr(gpu_max_mem, "nvmlDeviceGetName"):
        return  # CPU: device_name() returns "cpu"

    def device_name(device_index: int = 0) -> str:
        name = gpu_max_mem.nvmlDeviceGetName(gpu_max_mem.nvmlDeviceGetHandleByIndex(device_index))
        return name.decode("utf-8") if isinstance(name, bytes) else str(name)

    gpu_max_mem.device_name = device_name


def apply_fixes(epoch_fix: bool = True, predictions: bool = True) -> dict:
    """Patch this process so heareval's runners run today; returns what was done."""
    try:
        import heareval  # noqa: F401
    except ImportError:
        raise SystemExit("heareval is not installed: run scripts/install.sh, or "
                         "`hear-models install-tools` in an environment made with pip") from None
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    done = {"tensorflow": _tensorflow_stub()}
    if predictions:
        done["pytorch_lightning"] = _check_lightning()
        done["fit_loop_current_epoch"] = fix_fit_loop_current_epoch() if epoch_fix else "skipped"
        done["checkpoint_safe_globals"] = allow_heareval_checkpoints()
    _fix_gpu_max_mem()
    return done


def _run_click(command, argv: Sequence[str], prog: str) -> int:
    try:
        command.main(args=list(argv), prog_name=prog)
    except SystemExit as e:  # click's exit
        return int(e.code or 0) if not isinstance(e.code, str) else (print(e.code, file=sys.stderr) or 1)
    return 0


def predictions(argv: Sequence[str]) -> int:
    """heareval's predictions runner with the fixes; same arguments."""
    # HEAR_MODELS_NO_EPOCH_FIX=1 runs heareval as published (the tests show the bug with it)
    done = apply_fixes(epoch_fix=os.environ.get("HEAR_MODELS_NO_EPOCH_FIX") != "1")
    print(f"hear_models: heareval predictions with fixes {done}", flush=True)
    from heareval.predictions.runner import runner

    return _run_click(runner, argv, "hear-models heareval predictions")


def embeddings(argv: Sequence[str]) -> int:
    """heareval's embeddings runner with the fixes; same arguments."""
    apply_fixes(predictions=False)
    from heareval.embeddings.runner import runner

    return _run_click(runner, argv, "hear-models heareval embeddings")


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"predictions": predictions, "embeddings": embeddings}
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] not in commands:
        print(f"hear-models heareval: unknown runner {argv[0]!r}; expected one of: "
              f"{', '.join(commands)}\n{USAGE}", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
