"""Music tasks: music or speech, genre, instrument pitch, piano onsets.

Each task's generator sits beside its definition (a :class:`TaskDef` row); the
suite's order is kept in ``_defs.TASKS``.
"""

from __future__ import annotations

from typing import Dict, Iterator, List

import numpy as np

from . import _sources as S
from ._audio import at_snr, augment, fit, noise, normalize, trim
from ._build import Clip, Ctx, TaskDef
from ._common import LONG_SENTENCES, ONSET_GRID, SCENE_METRICS, SR, TVT, _n, _speech_bed, _tvt_split
from ._compose import GENRES, compose


# =========================================================== 5. music / speech
def gen_music_speech(ctx: Ctx) -> Iterator[Clip]:
    """v2: music often carries a voice (songs) and speech often sits on music (radio), at
    overlapping levels, so the label is which one dominates (v1: nearly separable)."""
    rng, dur = ctx.rng, 3.0
    n = _n(dur)
    nf, per = 10, ctx.size["per_fold"]
    spk_folds = S.speaker_pools(rng, [ctx.size["speakers_per_fold"]] * nf)
    styles = GENRES + ["solo", "solo"]
    segs, meta = [], []
    for f in range(nf):
        for j in range(per // 2):
            st = styles[int(rng.integers(len(styles)))]
            segs.append(compose(st, rng, dur))
            meta.append((f, j, st))
    music = [x.astype(np.float32) for x in S.iter_segments(segs, dur, SR)]

    def sentences(spk) -> np.ndarray:
        i1, i2 = rng.permutation(len(LONG_SENTENCES))[:2]
        return np.concatenate([trim(ctx.synth.say(spk, LONG_SENTENCES[i1]), -35),
                               np.zeros(_n(0.2)), trim(ctx.synth.say(spk, LONG_SENTENCES[i2]), -35)])

    for (f, j, st), x in zip(meta, music):
        x = normalize(x, float(rng.uniform(0.2, 0.7)))
        if rng.random() < 0.4:   # a song: a voice of this fold's speakers 8-15 dB under the band
            spk = spk_folds[f][int(rng.integers(len(spk_folds[f])))]
            x = x + at_snr(x, fit(normalize(sentences(spk), 0.5), n, rng), float(rng.uniform(8, 15)))
        x = x + at_snr(x, noise(n, rng, "pink"), float(rng.uniform(10, 40)))
        yield Clip(f"f{f}_music_{j:03d}", f"fold{f:02d}", f"music-{f}-{j}", x, ["music"])
    for f in range(nf):
        pool = spk_folds[f]
        beds = [music[k] for k, m in enumerate(meta) if m[0] == f]   # this fold's pieces only
        for j in range(per // 2):
            spk = pool[j % len(pool)]
            y = _speech_bed(ctx, sentences(spk), n, snr=(10, 40))
            if rng.random() < 0.7:   # speech over music, like radio: the music 4-15 dB below
                y = y + at_snr(y, beds[int(rng.integers(len(beds)))], float(rng.uniform(4, 15)))
            yield Clip(f"f{f}_speech_{j:03d}", f"fold{f:02d}", spk.ident, y, ["speech"])


MUSIC_SPEECH = TaskDef(
    name="music_speech", hear_task="tfds_gtzan_music_speech", embedding_type="scene",
    prediction_type="multiclass",
    split_mode="new_split_kfold", sample_duration=3.0, nfolds=10, version="v2", evaluation=SCENE_METRICS,
    generate=gen_music_speech, cost=1.0, group_key="speaker (speech) / piece (music)",
    sources=("espeak-ng", "flite", "fluidsynth", "timgm6mb-soundfont"),
    sizes={"smoke": {"per_fold": 4, "speakers_per_fold": 1},
           "small": {"per_fold": 12, "speakers_per_fold": 2},
           "mini": {"per_fold": 40, "speakers_per_fold": 4}})


# =========================================================== 6. genre
SHARED_KEYS = [0, 4, 11, 16, 24, 25, 27, 29, 30, 48, 52, 80, 81, 88, 89]
SHARED_BASS = [32, 33, 34, 38, 39]
def gen_genre(ctx: Ctx) -> Iterator[Clip]:
    """v2: a third of the clips carry another genre's piece of the same fold 6-12 dB below
    (a neighbour's radio), and noise down to 5 dB SNR (v1: solved by most features)."""
    rng, dur = ctx.rng, 4.0
    n = _n(dur)
    per = ctx.size["per_fold"]
    segs, meta = [], []
    for f in range(10):
        for j in range(per):
            g = GENRES[(f * per + j) % len(GENRES)]
            ev = compose(g, rng, dur)
            if rng.random() < 0.5:
                # half the pieces take their instruments from one pool shared by all
                # genres, so that rhythm, harmony and tempo must carry the label
                ev = [(t, S.program(m[0] & 0x0F, int(rng.choice(
                        SHARED_BASS if (m[0] & 0x0F) == 1 else SHARED_KEYS))))
                      if (m[0] & 0xF0) == 0xC0 else (t, m) for t, m in ev]
            segs.append(ev)
            meta.append((f, j, g))
    clips = [normalize(augment(x, SR, rng, speed_range=0.0)[:n], float(rng.uniform(0.3, 0.8)))
             for x in S.iter_segments(segs, dur, SR)]
    for k, ((f, j, g), x) in enumerate(zip(meta, clips)):
        if rng.random() < 1 / 3:
            others = [i for i, m in enumerate(meta) if m[0] == f and m[2] != g]
            x = x + at_snr(x, clips[others[int(rng.integers(len(others)))]], float(rng.uniform(6, 12)))
        x = x + at_snr(x, noise(n, rng, "pink"), float(rng.uniform(5, 35)))
        yield Clip(f"f{f}_{j:03d}_{g}", f"fold{f:02d}", f"piece-{f}-{j}", x, [g])


MUSIC_GENRE = TaskDef(
    name="music_genre", hear_task="tfds_gtzan", embedding_type="scene", prediction_type="multiclass",
    split_mode="new_split_kfold", sample_duration=4.0, nfolds=10, version="v2", evaluation=SCENE_METRICS,
    generate=gen_genre, cost=1.0, group_key="piece", sources=("fluidsynth", "timgm6mb-soundfont"),
    sizes={"smoke": {"per_fold": 7}, "small": {"per_fold": 21}, "mini": {"per_fold": 70}})


# =========================================================== 7. pitch (NSynth-like)
PITCH_PROGRAMS = [0, 1, 2, 4, 6, 7, 8, 11, 12, 13, 16, 17, 19, 21, 22, 24, 25, 26, 27, 32, 33,
                  35, 40, 41, 42, 46, 48, 52, 56, 57, 58, 60, 61, 64, 65, 66, 68, 70, 71, 73,
                  74, 75, 79, 80, 81, 82, 87, 88, 89, 90]


def gen_pitch(ctx: Ctx) -> Iterator[Clip]:
    rng, dur = ctx.rng, 1.0
    lo, hi = ctx.size["pitch_min"], ctx.size["pitch_max"]
    ctx.vocab = [str(p) for p in range(lo, hi + 1)]
    progs = [PITCH_PROGRAMS[i] for i in rng.permutation(len(PITCH_PROGRAMS))[:ctx.size["programs"]]]
    parts = _tvt_split(progs, rng)
    segs, meta = [], []
    for split in TVT:
        for prog in sorted(parts[split]):
            for p in range(lo, hi + 1):
                vel = int(rng.integers(60, 121))
                segs.append([(0.0, S.program(0, prog)), (0.01, S.note_on(0, p, vel)),
                             (0.76, S.note_off(0, p))])
                meta.append((split, prog, p))
    for (split, prog, p), x in zip(meta, S.iter_segments(segs, dur, SR, gap=1.0)):
        x = normalize(x, float(rng.uniform(0.3, 0.8)))
        yield Clip(f"gm{prog:03d}_{p:03d}", split, f"program-{prog}", x, [str(p)])


INSTRUMENT_PITCH = TaskDef(
    name="instrument_pitch", hear_task="nsynth_pitch", embedding_type="scene", prediction_type="multiclass",
    split_mode="trainvaltest", sample_duration=1.0, evaluation=["pitch_acc", "chroma_acc"],
    generate=gen_pitch, cost=1.0, group_key="GM instrument (program)",
    sources=("fluidsynth", "timgm6mb-soundfont"),
    extra={"pitch_range_min": "size:pitch_min", "pitch_range_max": "size:pitch_max"},
    sizes={"smoke": {"pitch_min": 48, "pitch_max": 71, "programs": 6},
           "small": {"pitch_min": 48, "pitch_max": 71, "programs": 15},
           "mini": {"pitch_min": 36, "pitch_max": 83, "programs": 25}})


# =========================================================== 8. piano onsets (MAESTRO-like)
PIANO_PROGRAMS = [0, 1, 2, 3, 4]   # one GM piano per fold
PIANO_PITCHES = [60, 62, 64, 65, 67, 69, 71, 72, 74, 76, 77, 79, 81, 83, 84]


def gen_piano(ctx: Ctx) -> Iterator[Clip]:
    rng, dur = ctx.rng, 4.0
    n = _n(dur)
    segs, meta = [], []
    for f, prog in enumerate(PIANO_PROGRAMS):
        for j in range(ctx.size["per_fold"]):
            ev = [(0.0, S.program(0, prog))]
            notes = []
            busy: Dict[int, float] = {}   # a pitch is not re-struck while it sounds
            t = float(rng.uniform(0.05, 0.4))
            while t < dur - 0.3:
                k = 2 if rng.random() < 0.25 else 1
                free = [p for p in PIANO_PITCHES if busy.get(p, -1.0) < t - 0.02]
                for p in rng.choice(free, size=min(k, len(free)), replace=False).tolist():
                    d = float(min(rng.uniform(0.1, 0.6), dur - 0.05 - t))
                    notes.append((round(t, 4), round(t + d, 4), int(p)))
                    busy[int(p)] = t + d
                t += float(rng.uniform(0.15, 0.5))
            for s, e, p in notes:
                ev += [(s, S.note_on(0, p, int(rng.integers(50, 121)))), (e, S.note_off(0, p))]
            segs.append(ev)
            meta.append((f, j, notes))
    for (f, j, notes), x in zip(meta, S.iter_segments(segs, dur, SR)):
        x = normalize(x, float(rng.uniform(0.3, 0.8)))
        x = x + at_snr(x, noise(n, rng, "pink"), float(rng.uniform(30, 50)))
        labels = [{"label": str(p), "start": round(s * 1000, 1), "end": round(e * 1000, 1)}
                  for s, e, p in sorted(notes)]
        yield Clip(f"gm{PIANO_PROGRAMS[f]}_{j:04d}", f"fold{f:02d}",
                   f"piano-program-{PIANO_PROGRAMS[f]}", x, labels)


PIANO_ONSETS = TaskDef(
    name="piano_onsets", hear_task="maestro", embedding_type="event", prediction_type="multilabel",
    split_mode="new_split_kfold", sample_duration=4.0, nfolds=5,
    evaluation=["event_onset_50ms_fms", "event_onset_offset_50ms_20perc_fms"],
    generate=gen_piano, cost=1.0, group_key="piano sound (GM program)",
    sources=("fluidsynth", "timgm6mb-soundfont"), extra={"use_scoring_for_early_stopping": False},
    evaluation_params=ONSET_GRID,
    sizes={"smoke": {"per_fold": 8}, "small": {"per_fold": 12}, "mini": {"per_fold": 80}})



TASKS: List[TaskDef] = [MUSIC_SPEECH, MUSIC_GENRE, INSTRUMENT_PITCH, PIANO_ONSETS]
