"""Everyday sounds: office events, animal sounds, sound mixtures.

Each task's generator sits beside its definition (a :class:`TaskDef` row); the
suite's order is kept in ``_defs.TASKS``.
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Tuple

import numpy as np

from . import _sources as S
from ._audio import at_snr, augment, fade, fit, noise, normalize, place, rms, trim
from ._build import Clip, Ctx, TaskDef
from ._common import SCENE_METRICS, SENTENCES, SR, TVT, _n, _tvt_split


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


OFFICE_EVENTS = TaskDef(
    name="office_events", hear_task="dcase2016_task2", embedding_type="event", prediction_type="multilabel",
    split_mode="trainvaltest", sample_duration=6.0, evaluation=["event_onset_200ms_fms", "segment_1s_er"],
    generate=gen_office, cost=1.2, group_key="source items used (disjoint by split where a class has >= 3)",
    sources=("sound-theme-freedesktop", "lmms-common", "hydrogen-drumkits", "espeak-ng", "flite"),
    sizes={"smoke": {"duration": 6.0, "train": 24, "valid": 8, "test": 8, "events": [3, 5]},
           "small": {"duration": 6.0, "train": 48, "valid": 16, "test": 16, "events": [3, 5]},
           "mini": {"duration": 6.0, "train": 240, "valid": 80, "test": 80, "events": [3, 5]}})


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


ANIMAL_SOUNDS = TaskDef(
    name="animal_sounds", hear_task="esc50", embedding_type="scene", prediction_type="multiclass",
    split_mode="presplit_kfold", sample_duration=2.0, nfolds=5, evaluation=SCENE_METRICS,
    generate=gen_animals, cost=0.8, group_key="recording region (recordings >= 5 s cut in 5 disjoint regions)",
    sources=("animals",),
    sizes={"smoke": {"per_fold": 2}, "small": {"per_fold": 6}, "mini": {"per_fold": 16}})


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


SOUND_MIXTURES = TaskDef(
    name="sound_mixtures", hear_task="fsd50k", embedding_type="scene", prediction_type="multilabel",
    split_mode="trainvaltest", sample_duration=2.0, evaluation=["mAP", "d_prime", "aucroc", "top1_acc"],
    generate=gen_mixtures, cost=1.0, group_key="source items used (disjoint by split)",
    sources=("animals", "hydrogen-drumkits", "sound-theme-freedesktop", "lmms-common", "fluidsynth",
             "timgm6mb-soundfont", "espeak-ng", "flite"),
    sizes={"smoke": {"train": 50, "valid": 20, "test": 20},
           "small": {"train": 150, "valid": 60, "test": 60},
           "mini": {"train": 500, "valid": 200, "test": 200}})



TASKS: List[TaskDef] = [OFFICE_EVENTS, ANIMAL_SOUNDS, SOUND_MIXTURES]
