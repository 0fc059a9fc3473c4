"""hear_models.training: pretraining and fine-tuning (MaskSpec, ATST, conformer, Whisper-AT heads).

Not built yet: see the project's issues. Installed under ``hear_models.training``.
"""
