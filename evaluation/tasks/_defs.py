"""The task definitions of the offline suite: one generator per task.

Every generator is a function ``gen(ctx) -> Iterator[Clip]`` drawing all
randomness from ``ctx.rng`` (seeded per seed and task) and iterating over
sorted sources, so the same seed and tool versions give the same bytes.
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
from scipy.signal import fftconvolve

from . import _sources as S
from ._audio import (MASTER_SR, at_snr, augment, fade, filt, fit, noise, normalize, place,
                     rms, trim)
from ._build import Clip, Ctx, TaskDef
from ._music import GENRES, compose

SR = MASTER_SR
TVT = ["train", "valid", "test"]


def _folds(n: int) -> List[str]:
    return [f"fold{i:02d}" for i in range(n)]


def _tvt_split(items: Sequence, rng: np.random.Generator, valid: float = 0.2,
               test: float = 0.2, minimum: int = 1) -> Dict[str, list]:
    """Shuffle ``items`` and cut them into train/valid/test (each at least ``minimum``)."""
    items = list(items)
    order = rng.permutation(len(items))
    items = [items[i] for i in order]
    n = len(items)
    n_test = max(minimum, int(round(test * n)))
    n_valid = max(minimum, int(round(valid * n)))
    return {"test": items[:n_test], "valid": items[n_test:n_test + n_valid],
            "train": items[n_test + n_valid:]}


def _kfold(items: Sequence, rng: np.random.Generator, k: int) -> List[list]:
    items = list(items)
    order = rng.permutation(len(items))
    out: List[list] = [[] for _ in range(k)]
    for j, i in enumerate(order):
        out[j % k].append(items[i])
    return out


def _n(dur: float) -> int:
    return int(round(dur * SR))


def _speech_bed(ctx: Ctx, x: np.ndarray, n: int, snr=(12, 35)) -> np.ndarray:
    """Fit speech into ``n`` samples at a random level with a little pink noise."""
    rng = ctx.rng
    x = normalize(x, float(rng.uniform(0.25, 0.7)))
    buf = fit(x, n, rng)
    return buf + at_snr(buf, noise(n, rng, "pink"), float(rng.uniform(*snr)))


# =========================================================== 1. spoken keywords
KEYWORDS = ["down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes"]


def gen_keywords(ctx: Ctx) -> Iterator[Clip]:
    rng, n = ctx.rng, _n(1.0)
    n_spk = ctx.size["speakers"]
    n_test = n_valid = max(1, int(round(0.2 * n_spk)))
    pools = S.speaker_pools(rng, [n_spk - n_valid - n_test, n_valid, n_test])
    si = -1
    for split, pool in zip(TVT, pools):
        for spk in pool:
            si += 1
            for w in KEYWORDS:
                x = trim(ctx.synth.say(spk, w), -35)
                if len(x) > _n(0.95):
                    x = fade(x[:_n(0.95)])
                yield Clip(f"spk{si:03d}_{w}", split, spk.ident, _speech_bed(ctx, x, n), [w])


# =========================================================== 2. language of a word
def gen_language(ctx: Ctx) -> Iterator[Clip]:
    rng, n = ctx.rng, _n(2.0)
    words = S.ktuberling_words()
    langs = [l for l in ctx.size["languages"] if l in words]
    if len(langs) != len(ctx.size["languages"]):
        raise S.MissingSource("ktuberling-data: some languages are missing "
                              f"(want {ctx.size['languages']}, have {sorted(words)})")
    common = sorted(set.intersection(*[set(words[l]) for l in langs]))
    concepts = [common[i] for i in rng.permutation(len(common))[:ctx.size["concepts"]]]
    folds = _kfold(sorted(concepts), rng, 5)
    for f, fold_concepts in enumerate(folds):
        for c in sorted(fold_concepts):
            for lang in langs:
                x = trim(S.read_audio(words[lang][c], SR), -40)
                x = augment(x, SR, rng, speed_range=0.12)   # blur the one-speaker cue
                if len(x) > _n(1.9):
                    x = fade(x[:_n(1.9)])
                yield Clip(f"{c}_{lang}", f"fold{f:02d}", c, _speech_bed(ctx, x, n), [lang])


# =========================================================== 3. counting talkers
SENTENCES = [
    "It's eleven o'clock.", "That is exactly what happened.", "I'm on my way to the meeting.",
    "I wonder what this is about.", "The airplane is almost full.",
    "Maybe tomorrow it will be cold.", "I would like a new alarm clock.",
    "I think I have a doctor's appointment.", "Don't forget a jacket.",
    "I think I've seen this before.", "The surface is slick.",
    "We'll stop in a couple of minutes.",
]
LONG_SENTENCES = [
    "The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.", "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.", "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.", "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.", "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.", "A rod is used to catch pink salmon.",
]


def gen_count(ctx: Ctx) -> Iterator[Clip]:
    rng, n = ctx.rng, _n(3.0)
    kmax, k = ctx.size["max_count"], ctx.size["speakers_per_fold"]
    speakers = [s for pool in S.speaker_pools(rng, [k] * 5) for s in pool]
    utts: Dict[int, List[np.ndarray]] = {}
    for si, spk in enumerate(speakers):
        sents = [LONG_SENTENCES[i] for i in rng.permutation(len(LONG_SENTENCES))[:3]]
        utts[si] = [trim(ctx.synth.say(spk, s), -35) for s in sents]
    per_fold = ctx.size["per_fold"]
    for f in range(5):
        pool = list(range(f * k, (f + 1) * k))
        for j in range(per_fold):
            count = j % (kmax + 1)
            talkers = sorted(rng.choice(pool, size=count, replace=False).tolist()) if count else []
            mix = np.zeros(n)
            for si in talkers:
                seq = [utts[si][i] for i in rng.permutation(len(utts[si]))]
                x = np.concatenate([np.concatenate([u, np.zeros(_n(rng.uniform(0.05, 0.3)))])
                                    for u in seq])
                start = int(rng.integers(-_n(0.8), _n(0.3)))
                place(mix, x / rms(x), start, gain=10 ** (rng.uniform(-3, 3) / 20))
            if count:
                mix *= 0.08 * 10 ** (rng.uniform(-3, 3) / 20) / rms(mix)
            mix += 0.004 * noise(n, rng, "pink")
            group = "&".join(speakers[i].ident for i in talkers) or f"no-talker-{f}-{j}"
            yield Clip(f"f{f}_{j:04d}_n{count}", f"fold{f:02d}", group, mix, [str(count)])


# =========================================================== 4. speaking style
STYLES = {
    #            pitch shift, speed factor, SSML range, SSML volume
    "angry": (4, 1.22, "high", "loud"),
    "fearful": (18, 1.35, "low", "medium"),
    "happy": (12, 1.12, "x-high", "loud"),
    "neutral": (0, 1.0, "medium", "medium"),
    "sad": (-12, 0.78, "x-low", "soft"),
}


def gen_emotion(ctx: Ctx) -> Iterator[Clip]:
    rng, n = ctx.rng, _n(3.0)
    k = ctx.size["speakers_per_fold"]
    speakers = [s for pool in S.speaker_pools(rng, [k] * 5, engines=("espeak",)) for s in pool]
    for f in range(5):
        for si in range(f * k, (f + 1) * k):
            spk = speakers[si]
            sents = [SENTENCES[i] for i in rng.permutation(len(SENTENCES))[:ctx.size["sentences"]]]
            for sj, sent in enumerate(sents):
                for style in sorted(STYLES):
                    dp, fs, rg, vol = STYLES[style]
                    pitch = int(np.clip(spk.pitch + dp + rng.integers(-6, 7), 0, 99))
                    spd = int(spk.speed * fs * rng.uniform(0.93, 1.07))
                    text = (f'<speak><prosody range="{rg}" volume="{vol}">{sent}'
                            f"</prosody></speak>")
                    x = trim(ctx.synth.say(spk, text, ssml=True, pitch=pitch, speed=spd), -35)
                    x = x / rms(x) * 0.08 * 10 ** (rng.uniform(-4, 4) / 20)
                    buf = fit(x, n, rng)
                    buf += at_snr(buf, noise(n, rng, "pink"), float(rng.uniform(15, 35)))
                    yield Clip(f"spk{si:03d}_s{sj}_{style}", f"fold{f:02d}", spk.ident, buf,
                               [style])


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


# =========================================================== 9. office events (DCASE 2016 t2)
def _office_items(ctx: Ctx) -> Dict[str, List[Tuple[str, object]]]:
    """{class: [(item id, loader or array)]} from real sound effects (+ TTS speech)."""
    fd = lambda name: ("freedesktop:" + name, S.freedesktop(name))  # noqa: E731
    lm = lambda rel: ("lmms:" + rel, S.lmms(rel))  # noqa: E731

    def hy(kit, f):
        return (f"hydrogen:{kit}/{f}", S.hydrogen_kit(kit) / f)

    gah = "Gimme A Hand 1.0"
    vel = ["Softest", "Soft", "Med", "Hard", "Hardest"]
    return {
        "phone": [fd("phone-incoming-call"), fd("phone-outgoing-calling"),
                  fd("phone-outgoing-busy")],
        "chime": [fd(x) for x in ["complete", "message", "message-new-instant",
                                  "dialog-information", "window-attention", "service-login",
                                  "service-logout", "device-added", "device-removed",
                                  "dialog-warning", "network-connectivity-established",
                                  "power-plug", "window-question"]],
        "bell": [fd("bell"), fd("alarm-clock-elapsed"), lm("misc/dong01.ogg"),
                 lm("misc/dong02.ogg"), lm("misc/dong03.ogg"), lm("misc/metalish_dong01.ogg")],
        "knock": [hy(gah, f"Clave-{v}.wav") for v in vel] + [lm("drums/wood01.ogg"),
                  hy("Millo-Drums_v.1", "stick_Woody.flac"),
                  lm("misc/hit02.ogg")],
        "clap": [hy(gah, f"HandClap-{v}.wav") for v in vel]
        + [lm(f"drums/clap0{i}.ogg") for i in range(1, 5)]
        + [hy("The Black Pearl 1.0", "HandClap.wav")],
        "snap": [hy(gah, f"Fingersnap-{v}.wav") for v in vel] + [lm("misc/snaph01.ogg")],
        "camera": [fd("camera-shutter"), fd("screen-capture")],
    }


def _item_pools(ctx: Ctx, classes: Dict[str, list], splits=TVT) -> Dict[str, Dict[str, list]]:
    """Disjoint item pools per split where a class has >= 3 items (else shared)."""
    pools: Dict[str, Dict[str, list]] = {}
    for c in sorted(classes):
        items = classes[c]
        if len(items) >= 3:
            pools[c] = _tvt_split(items, ctx.rng)
        else:
            pools[c] = {s: list(items) for s in splits}
    return pools


def _load_event(ctx: Ctx, cls: str, item, max_len: float) -> np.ndarray:
    rng = ctx.rng
    x = trim(S.read_audio(item, SR), -45) if not isinstance(item, np.ndarray) else item
    if cls == "knock":   # a door knock: 2-4 quick hits
        hit = x[:_n(0.25)]
        seq = np.zeros(_n(1.2))
        t = 0
        for _ in range(int(rng.integers(2, 5))):
            place(seq, hit, t, gain=float(rng.uniform(0.7, 1.0)))
            t += _n(rng.uniform(0.12, 0.25))
        x = trim(seq, -45)
    x = augment(x, SR, rng, speed_range=0.06)
    if len(x) > _n(max_len):
        L = _n(rng.uniform(0.6, 1.0) * max_len)
        s = int(rng.integers(0, len(x) - L + 1))
        x = fade(x[s:s + L], n_out=_n(0.05))
    return trim(x, -40)


def gen_office(ctx: Ctx) -> Iterator[Clip]:
    rng, dur = ctx.rng, ctx.size["duration"]
    n = _n(dur)
    classes = _office_items(ctx)
    pools = _item_pools(ctx, classes)
    classes["speech"] = []
    pools["speech"] = {s: [(f"tts:{spk.ident}", spk) for spk in pool]
                       for s, pool in zip(TVT, S.speaker_pools(rng, [5, 2, 2]))}
    names = sorted(classes)
    counts = {"train": ctx.size["train"], "valid": ctx.size["valid"], "test": ctx.size["test"]}
    phrases = ["hello", "excuse me", "thank you", "good morning", "see you later", "okay"]
    ci = 0
    for split in TVT:
        for j in range(counts[split]):
            bg = (noise(n, rng, "brown") * rng.uniform(0.3, 1.0)
                  + noise(n, rng, "pink") * rng.uniform(0.1, 0.5))
            tt = np.arange(n) / SR
            bg += rng.uniform(0, 0.5) * np.sin(2 * np.pi * rng.choice([50, 60]) * tt)
            mix = bg / rms(bg) * 10 ** (rng.uniform(-44, -34) / 20)
            labels, used = [], []
            n_ev = int(rng.integers(ctx.size["events"][0], ctx.size["events"][1] + 1))
            for _ in range(n_ev):
                cls = names[ci % len(names)]
                ci += 1
                pool = pools[cls][split]
                item_id, item = pool[int(rng.integers(len(pool)))]
                if cls == "speech":
                    x = trim(ctx.synth.say(item, phrases[int(rng.integers(len(phrases)))]), -35)
                    x = _load_event(ctx, cls, x, 1.6)
                else:
                    x = _load_event(ctx, cls, item, 1.6)
                start = float(rng.uniform(0.1, dur - len(x) / SR - 0.05))
                place(mix, normalize(x, float(rng.uniform(0.15, 0.7))), _n(start))
                labels.append({"label": cls, "start": round(start * 1000, 1),
                               "end": round((start + len(x) / SR) * 1000, 1)})
                used.append(item_id)
            labels.sort(key=lambda e: (e["start"], e["label"]))
            yield Clip(f"office_{split}_{j:04d}", split, "|".join(sorted(set(used))), mix, labels)


# =========================================================== 10. animals (ESC-50-like)
AMBIENCE = ["misc/applause01.ogg", "misc/raving_crowd01.ogg", "misc/breath01.ogg",
            "effects/start01.ogg", "stringsnpads/nord_ambient01.ogg"]

def gen_animals(ctx: Ctx) -> Iterator[Clip]:
    rng, n = ctx.rng, _n(2.0)
    files = S.animal_files()
    per = ctx.size["per_fold"]
    ambience = [np.tile(S.read_audio(S.lmms(r), SR), 3) for r in AMBIENCE]
    for animal in sorted(files):
        x = S.read_audio(files[animal], SR)
        x = x / (np.max(np.abs(x)) + 1e-9)
        regions = 5 if len(x) >= _n(5.0) else 1
        L = len(x) // regions
        for f in range(5):
            r = f if regions == 5 else 0
            src = x[r * L:(r + 1) * L]
            for j in range(per):
                y = augment(src, SR, rng, speed_range=0.12)
                y = trim(y, -50)
                y = normalize(fit(y, n, rng), float(rng.uniform(0.2, 0.8)))
                bg = noise(n, rng, str(rng.choice(["pink", "brown", "white"])))
                if rng.random() < 0.5:   # a real background ambience
                    amb = ambience[int(rng.integers(len(ambience)))]
                    bg = 0.3 * bg + fit(amb, n, rng) / (rms(amb) + 1e-9)
                y = y + at_snr(y, bg, float(rng.uniform(0, 25)))
                grp = f"{animal}-region{r}" if regions == 5 else f"{animal}-whole"
                yield Clip(f"{f}-{animal}-{j:03d}", f"fold{f:02d}", grp, y, [animal])


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


# =========================================================== 14. mixtures (FSD50K-like)
MIX_CLASSES = ["animal", "bell", "clap", "cymbal", "kick", "phone", "piano", "snare", "speech",
               "strings"]


def gen_mixtures(ctx: Ctx) -> Iterator[Clip]:
    rng, dur = ctx.rng, 2.0
    n = _n(dur)
    office = _office_items(ctx)
    kits = S.kit_pieces()
    kit_names = sorted(kits)
    kparts = _tvt_split(kit_names, rng)
    items: Dict[str, Dict[str, list]] = {}
    for piece in ("kick", "snare", "cymbal"):
        items[piece] = {s: [(f"{k}/{p.name}", p) for k in sorted(kparts[s])
                            for p in kits[k].get(piece, [])] for s in TVT}
    for c in ("bell", "phone", "clap"):
        items[c] = _tvt_split(office[c], rng)
    # animals: disjoint time regions of each recording (short ones are shared)
    animals = S.animal_files()
    items["animal"] = {s: [] for s in TVT}
    for a in sorted(animals):
        x = S.read_audio(animals[a], SR)
        if len(x) >= _n(3.0):
            cut = [0, int(0.6 * len(x)), int(0.8 * len(x)), len(x)]
            for si, s in enumerate(TVT):
                items["animal"][s].append((f"{a}[{si}]", x[cut[si]:cut[si + 1]]))
        else:
            for s in TVT:
                items["animal"][s].append((f"{a}[all]", x))
    # instruments: disjoint GM programs; speech: disjoint speakers
    inst = {"piano": [0, 1, 2, 3, 4, 5, 6, 7], "strings": [40, 41, 42, 44, 45, 48, 49, 50]}
    for c, progs in inst.items():
        items[c] = _tvt_split(progs, rng, valid=0.25, test=0.25)
    items["speech"] = dict(zip(TVT, S.speaker_pools(rng, [6, 3, 3])))

    counts = {"train": ctx.size["train"], "valid": ctx.size["valid"], "test": ctx.size["test"]}
    plans = []
    for split in TVT:
        for j in range(counts[split]):
            k = int(rng.choice([1, 2, 2, 3]))
            first = MIX_CLASSES[j % len(MIX_CLASSES)]
            others = [c for c in MIX_CLASSES if c != first]
            labs = [first] + [others[i] for i in rng.permutation(len(others))[:k - 1]]
            plans.append((split, j, sorted(labs)))
    # render every instrument phrase in one fluidsynth run
    segs, seg_index = [], {}
    for pi, (split, j, labs) in enumerate(plans):
        for c in labs:
            if c in inst:
                prog = int(items[c][split][int(rng.integers(len(items[c][split])))])
                key = 48 + int(rng.integers(0, 24))
                ev, t = [(0.0, S.program(0, prog))], 0.0
                while t < 1.4:
                    d = float(rng.choice([0.2, 0.3, 0.4]))
                    p = key + int(rng.choice([0, 2, 4, 5, 7, 9, 12]))
                    ev += [(t, S.note_on(0, p, int(rng.integers(60, 110)))),
                           (t + d, S.note_off(0, p))]
                    t += d
                seg_index[(pi, c)] = (len(segs), f"gm{prog}")
                segs.append(ev)
    rendered = [trim(x, -50).astype(np.float32) for x in S.iter_segments(segs, 1.6, SR)]
    cache: Dict[str, np.ndarray] = {}
    for pi, (split, j, labs) in enumerate(plans):
        mix = np.zeros(n)
        used = []
        for c in labs:
            if c in inst:
                si, iid = seg_index[(pi, c)]
                x = trim(rendered[si], -50)
            elif c == "speech":
                spk = items["speech"][split][int(rng.integers(len(items["speech"][split])))]
                x = trim(ctx.synth.say(spk, SENTENCES[int(rng.integers(len(SENTENCES)))]), -35)
                iid = spk.ident
            else:
                pool = items[c][split]
                iid, src = pool[int(rng.integers(len(pool)))]
                if isinstance(src, np.ndarray):
                    L = min(len(src), _n(1.8))
                    s0 = int(rng.integers(0, len(src) - L + 1))
                    x = src[s0:s0 + L]
                else:
                    if iid not in cache:
                        cache[iid] = trim(S.read_audio(src, SR), -45)
                    x = cache[iid]
                x = augment(x, SR, rng, speed_range=0.05)
            x = trim(x, -45)[:_n(1.9)]
            if len(x) == 0:
                continue
            x = fade(x, n_out=_n(0.03))
            x = x / (rms(x) + 1e-9) * 0.05 * 10 ** (rng.uniform(-5, 5) / 20)
            place(mix, x, int(rng.integers(0, max(1, n - len(x)))))
            used.append(iid)
        mix += 10 ** (rng.uniform(-55, -45) / 20) * noise(n, rng, "pink")
        yield Clip(f"mix_{split}_{j:04d}", split, "|".join(sorted(used)), mix, labs)


# =========================================================== the suite
ONSET_GRID = {"event_postprocessing_grid": {"median_filter_ms": [150], "min_duration": [50]},
              "task_specific_param_grid": {"max_epochs": [50], "check_val_every_n_epoch": [1]}}
SCENE_METRICS = ["top1_acc", "mAP", "d_prime", "aucroc"]

TASKS: List[TaskDef] = [
    TaskDef("spoken_keywords", "speech_commands", "scene", "multiclass", "trainvaltest", 1.0,
            ["top1_acc"], {"smoke": {"speakers": 10}, "mini": {"speakers": 100}},
            gen_keywords, group_key="speaker (TTS engine, voice, pitch, speed)", cost=1.0,
            sources=("espeak-ng", "flite")),
    TaskDef("word_language", "vox_lingua_top10", "scene", "multiclass", "new_split_kfold", 2.0,
            SCENE_METRICS,
            {"smoke": {"languages": ["de", "el", "en", "fr", "lt", "ru", "sl", "uk"],
                       "concepts": 10},
             "mini": {"languages": ["ca", "da", "de", "el", "en", "fr", "gl", "lt", "nn", "ru",
                                    "sl", "uk", "wa"], "concepts": 69}},
            gen_language, nfolds=5, group_key="word concept (the same word in every language)",
            cost=0.6, sources=("ktuberling-data",)),
    TaskDef("talker_count", "libricount", "scene", "multiclass", "new_split_kfold", 3.0,
            SCENE_METRICS,
            {"smoke": {"max_count": 6, "speakers_per_fold": 6, "per_fold": 14},
             "mini": {"max_count": 6, "speakers_per_fold": 14, "per_fold": 140}},
            gen_count, nfolds=5, group_key="the set of talkers (speaker pools disjoint by fold)",
            cost=0.8, sources=("espeak-ng", "flite")),
    TaskDef("speech_emotion", "tfds_crema_d", "scene", "multiclass", "new_split_kfold", 3.0,
            SCENE_METRICS,
            {"smoke": {"speakers_per_fold": 3, "sentences": 1},
             "mini": {"speakers_per_fold": 10, "sentences": 3}},
            gen_emotion, nfolds=5, group_key="speaker", cost=1.0, sources=("espeak-ng",)),
    TaskDef("music_speech", "tfds_gtzan_music_speech", "scene", "multiclass", "new_split_kfold",
            3.0, SCENE_METRICS,
            {"smoke": {"per_fold": 4, "speakers_per_fold": 1},
             "mini": {"per_fold": 40, "speakers_per_fold": 4}},
            gen_music_speech, nfolds=10, group_key="speaker (speech) / piece (music)", cost=1.0,
            version="v2",
            sources=("espeak-ng", "flite", "fluidsynth", "timgm6mb-soundfont")),
    TaskDef("music_genre", "tfds_gtzan", "scene", "multiclass", "new_split_kfold", 4.0,
            SCENE_METRICS, {"smoke": {"per_fold": 7}, "mini": {"per_fold": 70}},
            gen_genre, nfolds=10, group_key="piece", cost=1.0, version="v2",
            sources=("fluidsynth", "timgm6mb-soundfont")),
    TaskDef("instrument_pitch", "nsynth_pitch", "scene", "multiclass", "trainvaltest", 1.0,
            ["pitch_acc", "chroma_acc"],
            {"smoke": {"pitch_min": 48, "pitch_max": 71, "programs": 6},
             "mini": {"pitch_min": 36, "pitch_max": 83, "programs": 25}},
            gen_pitch, group_key="GM instrument (program)", cost=1.0,
            extra={"pitch_range_min": "size:pitch_min", "pitch_range_max": "size:pitch_max"},
            sources=("fluidsynth", "timgm6mb-soundfont")),
    TaskDef("piano_onsets", "maestro", "event", "multilabel", "new_split_kfold", 4.0,
            ["event_onset_50ms_fms", "event_onset_offset_50ms_20perc_fms"],
            {"smoke": {"per_fold": 8}, "mini": {"per_fold": 80}},
            gen_piano, nfolds=5, evaluation_params=ONSET_GRID,
            extra={"use_scoring_for_early_stopping": False},
            group_key="piano sound (GM program)", cost=1.0,
            sources=("fluidsynth", "timgm6mb-soundfont")),
    TaskDef("office_events", "dcase2016_task2", "event", "multilabel", "trainvaltest", 6.0,
            ["event_onset_200ms_fms", "segment_1s_er"],
            {"smoke": {"duration": 6.0, "train": 24, "valid": 8, "test": 8, "events": [3, 5]},
             "mini": {"duration": 6.0, "train": 240, "valid": 80, "test": 80,
                      "events": [3, 5]}},
            gen_office, group_key="source items used (disjoint by split where a class has >= 3)",
            cost=1.2, sources=("sound-theme-freedesktop", "lmms-common", "hydrogen-drumkits",
                               "espeak-ng", "flite")),
    TaskDef("animal_sounds", "esc50", "scene", "multiclass", "presplit_kfold", 2.0,
            SCENE_METRICS, {"smoke": {"per_fold": 2}, "mini": {"per_fold": 16}},
            gen_animals, nfolds=5,
            group_key="recording region (recordings >= 5 s cut in 5 disjoint regions)",
            cost=0.8, sources=("animals",)),
    TaskDef("djembe_strokes", "mridangam_stroke", "scene", "multiclass", "new_split_kfold", 0.8,
            SCENE_METRICS, {"smoke": {"per_stroke": 4}, "mini": {"per_stroke": 40}},
            gen_strokes, nfolds=5, group_key="drum (one djembe per fold)", cost=0.3, version="v2",
            sources=("hydrogen-drumkits",)),
    TaskDef("tuned_perc_tonic", "mridangam_tonic", "scene", "multiclass", "new_split_kfold",
            0.8, SCENE_METRICS, {"smoke": {"per_tonic": 1}, "mini": {"per_tonic": 10}},
            gen_tonic, nfolds=5, group_key="GM tuned-percussion instrument (program)", version="v2",
            cost=0.4, sources=("fluidsynth", "timgm6mb-soundfont")),
    TaskDef("drum_kit_pieces", "beijing_opera", "scene", "multiclass", "new_split_kfold", 1.5,
            SCENE_METRICS, {"smoke": {"per_fold": 12}, "mini": {"per_fold": 120}},
            gen_kit, nfolds=5, group_key="drum kit", cost=0.4, sources=("hydrogen-drumkits",)),
    TaskDef("impulse_position", "gunshot_triangulation", "scene", "multiclass",
            "new_split_kfold", 1.5, SCENE_METRICS, {"smoke": {"shots": 10}, "mini": {"shots": 100}},
            gen_position, nfolds=7, group_key="shot (source sample)", cost=0.5,
            sources=("hydrogen-drumkits",)),
    TaskDef("sound_mixtures", "fsd50k", "scene", "multilabel", "trainvaltest", 2.0,
            ["mAP", "d_prime", "aucroc", "top1_acc"],
            {"smoke": {"train": 50, "valid": 20, "test": 20},
             "mini": {"train": 500, "valid": 200, "test": 200}},
            gen_mixtures, group_key="source items used (disjoint by split)", cost=1.0,
            sources=("animals", "hydrogen-drumkits", "sound-theme-freedesktop", "lmms-common",
                     "fluidsynth", "timgm6mb-soundfont", "espeak-ng", "flite")),
]


# The `small` suite: about a third of `mini` (three times `smoke`), sized for README's main
# job: test splits large enough that heareval's scores separate from chance by more than
# their fold spread, generated and embedded in a few minutes on 2 cores.
SMALL_SIZES = {
    "spoken_keywords": {"speakers": 30},
    "word_language": {"languages": ["de", "el", "en", "fr", "lt", "ru", "sl", "uk"], "concepts": 30},
    "talker_count": {"max_count": 6, "speakers_per_fold": 10, "per_fold": 42},
    "speech_emotion": {"speakers_per_fold": 6, "sentences": 2},
    "music_speech": {"per_fold": 12, "speakers_per_fold": 2},
    "music_genre": {"per_fold": 21},
    "instrument_pitch": {"pitch_min": 48, "pitch_max": 71, "programs": 15},
    "piano_onsets": {"per_fold": 12},
    "office_events": {"duration": 6.0, "train": 48, "valid": 16, "test": 16, "events": [3, 5]},
    "animal_sounds": {"per_fold": 6},
    "djembe_strokes": {"per_stroke": 12},
    "tuned_perc_tonic": {"per_tonic": 6},
    "drum_kit_pieces": {"per_fold": 36},
    "impulse_position": {"shots": 30},
    "sound_mixtures": {"train": 150, "valid": 60, "test": 60},
}
for _t in TASKS:
    _t.sizes["small"] = SMALL_SIZES[_t.name]
