"""hear_models.evaluation: the offline HEAR task suite, the heareval runner, probe reports.

Installed under ``hear_models.evaluation``.
"""
