"""The offline suite's tasks, in the suite's order (each family module holds its tasks'
generators beside their :class:`TaskDef` rows: ``_speech``, ``_music``, ``_percussion``,
``_environment``; what they share is in ``_common``)."""
from __future__ import annotations

from typing import List

from . import _environment, _music, _percussion, _speech
from ._build import TaskDef

_ORDER = ["spoken_keywords", "word_language", "talker_count", "speech_emotion", "music_speech",
          "music_genre", "instrument_pitch", "piano_onsets", "office_events", "animal_sounds",
          "djembe_strokes", "tuned_perc_tonic", "drum_kit_pieces", "impulse_position",
          "sound_mixtures"]
_BY_NAME = {t.name: t for family in (_speech, _music, _percussion, _environment) for t in family.TASKS}
assert sorted(_BY_NAME) == sorted(_ORDER), "a task is defined twice or left out of the suite order"
TASKS: List[TaskDef] = [_BY_NAME[name] for name in _ORDER]
