"""Percussion tasks: djembe strokes, tuned-percussion tonic, drum-kit pieces, impulse position.

Each task's generator sits beside its definition (a :class:`TaskDef` row); the
suite's order is kept in ``_defs.TASKS``.
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Tuple

import numpy as np
from scipy.signal import fftconvolve

from . import _sources as S
from ._audio import at_snr, augment, filt, noise, normalize, place, trim
from ._build import Clip, Ctx, TaskDef
from ._common import SCENE_METRICS, SR, _kfold, _n


# =========================================================== 11. djembe strokes (Mridangam)
def gen_strokes(ctx: Ctx) -> Iterator[Clip]:
    rng, n = ctx.rng, _n(0.8)
    kit = S.hydrogen_kit("circAfrique v4")
    per = ctx.size["per_stroke"]
    strokes = ("Bass", "Slap", "Tone")
    raw = {(d, st): trim(S.read_audio(kit / f"Djembe{d} {st}.wav", SR), -50)
           for d in range(1, 6) for st in strokes}
    for d in range(1, 6):   # fold = drum
        for stroke in strokes:
            x = raw[(d, stroke)]
            for j in range(per):
                y = augment(x, SR, rng, speed_range=0.15)
                peak = float(rng.uniform(0.2, 0.8))
                y = normalize(y, peak)
                buf = np.zeros(n)
                place(buf, y, _n(rng.uniform(0.0, 0.1)))
                if rng.random() < 0.7:   # a softer, later stroke of the same drum
                    other = strokes[int(rng.integers(3))]
                    z = normalize(augment(raw[(d, other)], SR, rng, speed_range=0.05), peak)
                    place(buf, z, _n(rng.uniform(0.2, 0.45)),
                          gain=10 ** (rng.uniform(-9, -3) / 20))
                col = str(rng.choice(["pink", "brown", "white"]))
                buf += at_snr(buf, noise(n, rng, col), float(rng.uniform(-3, 20)))
                yield Clip(f"djembe{d}_{stroke.lower()}_{j:03d}", f"fold{d - 1:02d}",
                           f"djembe{d}", buf, [stroke.lower()])


DJEMBE_STROKES = TaskDef(
    name="djembe_strokes", hear_task="mridangam_stroke", embedding_type="scene", prediction_type="multiclass",
    split_mode="new_split_kfold", sample_duration=0.8, nfolds=5, version="v2", evaluation=SCENE_METRICS,
    generate=gen_strokes, cost=0.3, group_key="drum (one djembe per fold)", sources=("hydrogen-drumkits",),
    sizes={"smoke": {"per_stroke": 4}, "small": {"per_stroke": 12}, "mini": {"per_stroke": 40}})


# =========================================================== 11b. tonic (Mridangam tonic)
TONICS = {"B": 59, "C": 60, "C#": 61, "D": 62, "D#": 63, "E": 64}   # mridangam tonics
# v2: clearly pitched ones only (v1 also drew agogo, wood block, taiko, melodic tom and synth
# drum, whose pitch is weak or swept: Whisper base stayed at chance, 0.18 for 0.17)
TUNED_PERC = [8, 9, 10, 11, 12, 13, 14, 15, 47, 108, 112, 114]


def gen_tonic(ctx: Ctx) -> Iterator[Clip]:
    rng, dur = ctx.rng, 0.8
    n = _n(dur)
    progs = sorted(int(p) for p in rng.choice(TUNED_PERC, size=10, replace=False))
    folds = _kfold(progs, rng, 5)
    segs, meta = [], []
    for f, fprogs in enumerate(folds):
        for prog in sorted(fprogs):
            for tonic in sorted(TONICS):
                base = TONICS[tonic]
                for j in range(ctx.size["per_tonic"]):
                    # a short stroke pattern on the tonic, its octave or its fifth (the
                    # tonic itself always sounds): the label is the tuning, not a note
                    ev, t = [(0.0, S.program(0, prog))], 0.01
                    for k in range(int(rng.integers(1, 4))):   # v2: the tonic stroke is the loudest
                        p = base if k == 0 else base + int(rng.choice([0, 7, 12, -12]))
                        vel = int(rng.integers(100, 128)) if k == 0 else int(rng.integers(50, 91))
                        ev += [(t, S.note_on(0, p, vel)), (t + 0.15, S.note_off(0, p))]
                        t += float(rng.uniform(0.12, 0.25))
                    segs.append(ev)
                    meta.append((f, prog, tonic, j))
    for (f, prog, tonic, j), x in zip(meta, S.iter_segments(segs, dur, SR, gap=1.0)):
        x = normalize(x, float(rng.uniform(0.2, 0.8)))
        x = x + at_snr(x, noise(n, rng, "pink"), float(rng.uniform(15, 40)))
        yield Clip(f"gm{prog:03d}_{tonic.replace('#', 's')}_{j:03d}", f"fold{f:02d}",
                   f"program-{prog}", x, [tonic])


TUNED_PERC_TONIC = TaskDef(
    name="tuned_perc_tonic", hear_task="mridangam_tonic", embedding_type="scene", prediction_type="multiclass",
    split_mode="new_split_kfold", sample_duration=0.8, nfolds=5, version="v2", evaluation=SCENE_METRICS,
    generate=gen_tonic, cost=0.4, group_key="GM tuned-percussion instrument (program)",
    sources=("fluidsynth", "timgm6mb-soundfont"),
    sizes={"smoke": {"per_tonic": 1}, "small": {"per_tonic": 6}, "mini": {"per_tonic": 10}})


# =========================================================== 12. kit pieces (Beijing Opera)
def gen_kit(ctx: Ctx) -> Iterator[Clip]:
    rng, dur = ctx.rng, 1.5
    n = _n(dur)
    kits = S.kit_pieces()
    names = sorted(kits)
    folds = _kfold(names, rng, 5)
    pieces = sorted(S.DRUM_PIECES)
    cache: Dict[str, np.ndarray] = {}
    for f, fkits in enumerate(folds):
        fkits = sorted(fkits)
        for j in range(ctx.size["per_fold"]):
            piece = pieces[j % len(pieces)]
            have = [k for k in fkits if kits[k].get(piece)]
            if not have:
                continue
            kit = have[int(rng.integers(len(have)))]
            files = kits[kit][piece]
            buf = np.zeros(n)
            t = _n(rng.uniform(0.0, 0.1))
            for _ in range(int(rng.integers(1, 4))):
                p = files[int(rng.integers(len(files)))]
                if str(p) not in cache:
                    cache[str(p)] = trim(S.read_audio(p, SR), -50)
                place(buf, cache[str(p)], t, gain=float(rng.uniform(0.5, 1.0)))
                t += _n(rng.uniform(0.25, 0.6))
            buf = normalize(buf, float(rng.uniform(0.3, 0.8)))
            buf += at_snr(buf, noise(n, rng, "pink"), float(rng.uniform(25, 45)))
            yield Clip(f"f{f}_{j:04d}_{piece}", f"fold{f:02d}", f"kit:{kit}", buf, [piece])


DRUM_KIT_PIECES = TaskDef(
    name="drum_kit_pieces", hear_task="beijing_opera", embedding_type="scene", prediction_type="multiclass",
    split_mode="new_split_kfold", sample_duration=1.5, nfolds=5, evaluation=SCENE_METRICS,
    generate=gen_kit, cost=0.4, group_key="drum kit", sources=("hydrogen-drumkits",),
    sizes={"smoke": {"per_fold": 12}, "small": {"per_fold": 36}, "mini": {"per_fold": 120}})


# =========================================================== 13. impulse position (gunshot)
def _shots() -> List[Tuple[str, object]]:
    kits = S.kit_pieces()
    out = []
    for kit in sorted(kits):
        for p in kits[kit].get("snare", []):
            out.append((f"{kit}/{p.name}", p))
    gah = S.hydrogen_kit("Gimme A Hand 1.0")
    for p in sorted(gah.glob("HandClap-*.wav")) + sorted(gah.glob("CajonSlaps-*.wav")):
        out.append((f"Gimme A Hand 1.0/{p.name}", p))
    for rel in ["drums/clap01.ogg", "drums/clap02.ogg", "drums/clap03.ogg", "drums/clap04.ogg",
                "drums/snare01.ogg", "drums/snare02.ogg", "drums/snare03.ogg",
                "drums/snare04.ogg", "drums/snare05.ogg", "drums/snare06.ogg",
                "drums/snare07.ogg", "drums/snare_acoustic01.ogg", "drums/snare_electro01.ogg",
                "drums/snare_harsh01.ogg", "drums/snare_hiphop01.ogg",
                "drums/snare_hiphop02.ogg", "drums/snare_muffled01.ogg",
                "drums/snare_muffled02.ogg", "drums/snare_short01.ogg",
                "drums/nasty_snare01.ogg", "effects/explode01.ogg"]:
        out.append((f"lmms/{rel}", S.lmms(rel)))
    for kit in sorted(kits):
        for p in kits[kit].get("tom", []):
            out.append((f"{kit}/{p.name}", p))
    return out


def gen_position(ctx: Ctx) -> Iterator[Clip]:
    rng, dur = ctx.rng, 1.5
    n = _n(dur)
    n_pos = 7
    # fixed simulated microphone positions: distance, wall reflections, tail
    pos = []
    prng = np.random.default_rng(12345)   # the "room": the same for every seed
    for i in range(n_pos):
        dist = 8.0 + 9.0 * i + prng.uniform(-2, 2)
        refl = [(float(prng.uniform(0.004, 0.06)), float(prng.uniform(0.2, 0.6)))
                for _ in range(4)]
        pos.append({"dist": dist, "refl": refl, "t60": float(prng.uniform(0.2, 0.9)),
                    "drr": float(prng.uniform(-6, 6))})
    shots = _shots()
    chosen = [shots[i] for i in sorted(rng.permutation(len(shots))[:ctx.size["shots"]])]
    folds = _kfold(list(range(len(chosen))), rng, n_pos)
    for f, idxs in enumerate(folds):
        for si in sorted(idxs):
            sid, path = chosen[si]
            dry = trim(S.read_audio(path, SR), -50)[:_n(0.5)]
            dry = dry / (np.max(np.abs(dry)) + 1e-9)
            for pi, P in enumerate(pos):
                delay = P["dist"] / 343.0 + rng.normal(0, 0.001)
                gain = 10.0 / P["dist"] * 10 ** (rng.normal(0, 1.5) / 20)
                ir = np.zeros(_n(1.0))
                ir[0] = 1.0
                for dt, g in P["refl"]:
                    ir[_n(dt + rng.normal(0, 0.0003))] += g
                tail = noise(len(ir), rng, "white") * np.exp(
                    -6.9 * np.arange(len(ir)) / (P["t60"] * SR))
                ir += tail * 10 ** (-P["drr"] / 20) * 0.05
                wet = fftconvolve(dry, ir)[:n]
                # air absorption: farther positions lose more highs
                wet = filt(wet, SR, high=float(np.clip(16000 - 220 * P["dist"], 1500, 16000)))
                buf = np.zeros(n)
                place(buf, wet * gain * 0.3, _n(0.02 + delay))
                buf += 10 ** (rng.uniform(-60, -50) / 20) * noise(n, rng, "pink")
                yield Clip(f"shot{si:03d}_pos{pi}", f"fold{f:02d}", f"shot:{sid}", buf,
                           [f"pos{pi}"])


IMPULSE_POSITION = TaskDef(
    name="impulse_position", hear_task="gunshot_triangulation", embedding_type="scene",
    prediction_type="multiclass",
    split_mode="new_split_kfold", sample_duration=1.5, nfolds=7, evaluation=SCENE_METRICS,
    generate=gen_position, cost=0.5, group_key="shot (source sample)", sources=("hydrogen-drumkits",),
    sizes={"smoke": {"shots": 10}, "small": {"shots": 30}, "mini": {"shots": 100}})



TASKS: List[TaskDef] = [DJEMBE_STROKES, TUNED_PERC_TONIC, DRUM_KIT_PIECES, IMPULSE_POSITION]
