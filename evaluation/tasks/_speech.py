"""Speech tasks: keywords, the language of a word, counting talkers, speaking style.

Each task's generator sits beside its definition (a :class:`TaskDef` row); the
suite's order is kept in ``_defs.TASKS``.
"""

from __future__ import annotations

from typing import Dict, Iterator, List

import numpy as np

from . import _sources as S
from ._audio import at_snr, augment, fade, fit, noise, place, rms, trim
from ._build import Clip, Ctx, TaskDef
from ._common import LONG_SENTENCES, SCENE_METRICS, SENTENCES, SR, TVT, _kfold, _n, _speech_bed


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


SPOKEN_KEYWORDS = TaskDef(
    name="spoken_keywords", hear_task="speech_commands", embedding_type="scene", prediction_type="multiclass",
    split_mode="trainvaltest", sample_duration=1.0, evaluation=["top1_acc"],
    generate=gen_keywords, cost=1.0, group_key="speaker (TTS engine, voice, pitch, speed)",
    sources=("espeak-ng", "flite"),
    sizes={"smoke": {"speakers": 10}, "small": {"speakers": 30}, "mini": {"speakers": 100}})


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


WORD_LANGUAGE = TaskDef(
    name="word_language", hear_task="vox_lingua_top10", embedding_type="scene", prediction_type="multiclass",
    split_mode="new_split_kfold", sample_duration=2.0, nfolds=5, evaluation=SCENE_METRICS,
    generate=gen_language, cost=0.6, group_key="word concept (the same word in every language)",
    sources=("ktuberling-data",),
    sizes={"smoke": {"languages": ["de", "el", "en", "fr", "lt", "ru", "sl", "uk"], "concepts": 10},
           "small": {"languages": ["de", "el", "en", "fr", "lt", "ru", "sl", "uk"], "concepts": 30},
           "mini": {"languages": ["ca", "da", "de", "el", "en", "fr", "gl", "lt", "nn", "ru", "sl",
                                  "uk", "wa"], "concepts": 69}})


# =========================================================== 3. counting talkers


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


TALKER_COUNT = TaskDef(
    name="talker_count", hear_task="libricount", embedding_type="scene", prediction_type="multiclass",
    split_mode="new_split_kfold", sample_duration=3.0, nfolds=5, evaluation=SCENE_METRICS,
    generate=gen_count, cost=0.8, group_key="the set of talkers (speaker pools disjoint by fold)",
    sources=("espeak-ng", "flite"),
    sizes={"smoke": {"max_count": 6, "speakers_per_fold": 6, "per_fold": 14},
           "small": {"max_count": 6, "speakers_per_fold": 10, "per_fold": 42},
           "mini": {"max_count": 6, "speakers_per_fold": 14, "per_fold": 140}})


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


SPEECH_EMOTION = TaskDef(
    name="speech_emotion", hear_task="tfds_crema_d", embedding_type="scene", prediction_type="multiclass",
    split_mode="new_split_kfold", sample_duration=3.0, nfolds=5, evaluation=SCENE_METRICS,
    generate=gen_emotion, cost=1.0, group_key="speaker", sources=("espeak-ng",),
    sizes={"smoke": {"speakers_per_fold": 3, "sentences": 1},
           "small": {"speakers_per_fold": 6, "sentences": 2},
           "mini": {"speakers_per_fold": 10, "sentences": 3}})



TASKS: List[TaskDef] = [SPOKEN_KEYWORDS, WORD_LANGUAGE, TALKER_COUNT, SPEECH_EMOTION]
