"""hear_models.training: one Lightning 2.x engine for pretraining and fine-tuning.

    hear-models train CONFIG [key=value ...] [--resume]
    hear-models train export CKPT OUT.pt

Modules: ``config`` (dataclasses, YAML, overrides), ``data`` (folders, manifests, HEAR task
splits, crops, padding masks, mixup, resumable batches), ``engine`` (the LightningModule
base, checkpoints, logs, NaN guard, ``fit``, ``export``), ``objectives`` (the registry of
objectives), ``maskspec`` (MaskSpec pretraining and fine-tuning). Nothing is imported at
package import; Lightning loads when training starts. See docs/training.md.
"""
