"""Rule-based General MIDI compositions (events in seconds) for the music tasks."""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

from ._sources import note_off, note_on, program

Events = List[Tuple[float, bytes]]
DRUM_CH = 9
GENRES = ["classical", "electronic", "hiphop", "jazz", "pop", "reggae", "rock"]

MAJOR = [0, 2, 4, 5, 7, 9, 11]
MINOR = [0, 2, 3, 5, 7, 8, 10]
PROGRESSIONS = [[0, 4, 5, 3], [0, 3, 4, 0], [5, 3, 0, 4], [0, 5, 3, 4], [1, 4, 0, 5]]


class Score:
    def __init__(self, rng: np.random.Generator, dur: float):
        self.rng, self.dur, self.ev = rng, dur, []  # type: ignore[var-annotated]
        self.drums = True

    def prog(self, ch: int, p: int):
        self.ev.append((0.0, program(ch, int(p))))

    def note(self, t: float, ch: int, pitch: int, vel: int, d: float, human: float = 0.006):
        t = t + float(self.rng.normal(0, human)) if human else t
        if ch == DRUM_CH and not self.drums:
            return
        if t < 0 or t >= self.dur - 0.02:
            return
        pitch = int(min(max(pitch, 0), 127))
        vel = int(min(max(vel + self.rng.integers(-8, 9), 1), 127))
        end = min(t + max(d, 0.03), self.dur + 0.5)
        self.ev.append((t, note_on(ch, pitch, vel)))
        self.ev.append((end, note_off(ch, pitch)))


def _chord(key: int, scale, degree: int, n: int = 3, seventh: bool = False) -> List[int]:
    tones = []
    for k in range(n + (1 if seventh else 0)):
        step = degree + 2 * k
        tones.append(key + scale[step % 7] + 12 * (step // 7))
    return tones


def compose(style: str, rng: np.random.Generator, dur: float) -> Events:
    """One clip of ``dur`` seconds in a style (random key, tempo, instruments)."""
    s = Score(rng, dur)
    key = 48 + int(rng.integers(0, 12))
    minor = bool(rng.random() < 0.35)
    scale = MINOR if minor else MAJOR
    prog = PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))]
    s.drums = bool(rng.random() > 0.25)   # a quarter of the pieces have no drums
    if style == "classical":
        tempo = rng.uniform(60, 92)
        beat = 60 / tempo
        s.prog(0, rng.choice([48, 49, 42, 19, 6, 0, 52]))
        s.prog(1, rng.choice([40, 73, 68, 71, 0, 41, 56, 11]))
        t, i, mel = 0.0, 0, 4
        while t < dur:
            root = prog[i % 4]
            for p in _chord(key, scale, root):
                s.note(t, 0, p, 60, 4 * beat * 0.98, human=0.0)
            s.note(t, 0, key - 12 + scale[root % 7], 55, 4 * beat * 0.98, human=0.0)
            b = 0.0
            while b < 4:
                d = float(rng.choice([1.0, 1.0, 2.0, 0.5]))
                mel = int(np.clip(mel + rng.choice([-2, -1, -1, 1, 1, 2]), 0, 12))
                s.note(t + b * beat, 1, key + 12 + scale[mel % 7] + 12 * (mel // 7), 80,
                       d * beat * 0.95)
                b += d
            t += 4 * beat
            i += 1
    elif style == "rock":
        tempo = rng.uniform(110, 150)
        beat = 60 / tempo
        s.prog(0, rng.choice([29, 30, 30, 27, 16]))
        s.prog(1, rng.choice([33, 34, 35, 38]))
        t, i = 0.0, 0
        while t < dur:
            root = key - 12 + scale[prog[i % 4] % 7]
            for k in range(8):
                tt = t + k * beat / 2
                for p in (root, root + 7, root + 12):
                    s.note(tt, 0, p, 95, beat / 2 * 0.9)
                s.note(tt, 1, root - 12, 100, beat / 2 * 0.9)
                s.note(tt, DRUM_CH, 42, 80, 0.1)
            for k in range(4):
                s.note(t + k * beat, DRUM_CH, 36 if k % 2 == 0 else 38, 110, 0.1)
            if i % 4 == 0:
                s.note(t, DRUM_CH, 49, 100, 0.5)
            t += 4 * beat
            i += 1
    elif style == "jazz":
        tempo = rng.uniform(120, 200)
        beat = 60 / tempo
        sw = beat * 2 / 3
        s.prog(0, rng.choice([0, 4, 11, 0, 26, 16]))
        s.prog(1, rng.choice([32, 32, 33]))
        t, i = 0.0, 0
        while t < dur:
            root = prog[i % 4]
            ch = _chord(key, scale, root, seventh=True)
            for p in ch:
                s.note(t + beat, 0, p, 70, beat * 0.6)
                s.note(t + 3 * beat + sw, 0, p, 65, beat * 0.4)
            for k in range(4):
                tone = ch[int(rng.integers(0, 4))] - 24
                if k == 0:
                    tone = ch[0] - 24
                s.note(t + k * beat, 1, tone + int(rng.choice([0, 0, 1, -1])) * (k == 3), 90,
                       beat * 0.9)
            for k in range(4):
                s.note(t + k * beat, DRUM_CH, 51, 80, 0.2)
                if k % 2 == 1:
                    s.note(t + k * beat + sw, DRUM_CH, 51, 60, 0.2)
                    s.note(t + k * beat, DRUM_CH, 44, 70, 0.1)
            t += 4 * beat
            i += 1
    elif style == "electronic":
        tempo = rng.uniform(120, 136)
        beat = 60 / tempo
        s.prog(0, rng.choice([80, 81, 87, 90, 4, 11, 16]))
        s.prog(1, rng.choice([38, 39, 87, 33]))
        t, i = 0.0, 0
        while t < dur:
            ch = _chord(key, scale, prog[i % 4])
            arp = ch + [ch[0] + 12]
            for k in range(16):
                s.note(t + k * beat / 4, 0, arp[k % 4] + 12, 80, beat / 4 * 0.8, human=0.0)
            for k in range(4):
                s.note(t + k * beat, DRUM_CH, 36, 120, 0.1, human=0.0)
                s.note(t + k * beat + beat / 2, DRUM_CH, 46, 80, 0.1, human=0.0)
                s.note(t + k * beat + beat / 2, 1, ch[0] - 24, 100, beat / 2 * 0.8, human=0.0)
                if k % 2 == 1:
                    s.note(t + k * beat, DRUM_CH, 39, 100, 0.1, human=0.0)
            t += 4 * beat
            i += 1
    elif style == "reggae":
        tempo = rng.uniform(66, 86)
        beat = 60 / tempo
        s.prog(0, rng.choice([16, 17, 27, 28, 0, 4]))
        s.prog(1, rng.choice([33, 32, 38]))
        t, i = 0.0, 0
        while t < dur:
            ch = _chord(key, scale, prog[i % 4])
            for k in range(4):
                for p in ch:
                    s.note(t + k * beat + beat / 2, 0, p + 12, 85, beat * 0.2)
                s.note(t + k * beat, DRUM_CH, 42, 60, 0.1)
                s.note(t + k * beat + beat / 2, DRUM_CH, 42, 50, 0.1)
            s.note(t + 2 * beat, DRUM_CH, 36, 110, 0.1)
            s.note(t + 2 * beat, DRUM_CH, 37, 100, 0.1)
            for b, dd in ((0.0, 0.75), (1.0, 0.5), (1.5, 0.5), (2.5, 0.5), (3.0, 0.75)):
                s.note(t + b * beat, 1, ch[int(rng.integers(0, 3))] - 24, 100, dd * beat)
            t += 4 * beat
            i += 1
    elif style == "pop":
        # like rock's backbeat, but clean piano/guitar chords and a sung-like lead
        tempo = rng.uniform(96, 126)
        beat = 60 / tempo
        s.prog(0, rng.choice([0, 4, 24, 25, 1]))
        s.prog(1, rng.choice([33, 34, 38]))
        s.prog(2, rng.choice([52, 53, 54, 73, 81, 65]))
        t, i, mel = 0.0, 0, 4
        while t < dur:
            ch = _chord(key, scale, prog[i % 4])
            for k in range(4):
                for p in ch:
                    s.note(t + k * beat, 0, p + 12, 70, beat * 0.9)
                s.note(t + k * beat, 1, ch[0] - 24, 95, beat * 0.9)
                s.note(t + k * beat, DRUM_CH, 36 if k % 2 == 0 else 38, 100, 0.1)
                s.note(t + k * beat, DRUM_CH, 42, 70, 0.1)
                s.note(t + k * beat + beat / 2, DRUM_CH, 42, 60, 0.1)
            b = 0.0
            while b < 4:
                d = float(rng.choice([0.5, 1.0, 1.0, 1.5]))
                mel = int(np.clip(mel + rng.choice([-2, -1, 1, 2, 0]), 0, 11))
                s.note(t + b * beat, 2, key + 12 + scale[mel % 7] + 12 * (mel // 7), 90,
                       d * beat * 0.9)
                b += d
            t += 4 * beat
            i += 1
    elif style == "hiphop":
        # slow boom-bap: syncopated kick, heavy snare on 2 and 4, looped keys, sub bass
        tempo = rng.uniform(82, 98)
        beat = 60 / tempo
        s.prog(0, rng.choice([4, 5, 0, 11, 89]))
        s.prog(1, rng.choice([38, 39, 33, 87]))
        t, i = 0.0, 0
        while t < dur:
            ch = _chord(key, scale, prog[i % 2], seventh=True)
            for p in ch:
                s.note(t, 0, p + 12, 65, 1.5 * beat)
                s.note(t + 2.5 * beat, 0, p + 12, 55, beat)
            for b in (0.0, 0.75, 2.5):
                s.note(t + b * beat, DRUM_CH, 36, 120, 0.1)
                s.note(t + b * beat, 1, ch[0] - 24, 105, 0.6 * beat)
            for b in (1.0, 3.0):
                s.note(t + b * beat, DRUM_CH, 38, 120, 0.1)
            for k in range(8):
                s.note(t + k * beat / 2 + (beat / 12 if k % 2 else 0), DRUM_CH, 42, 60, 0.05)
            t += 4 * beat
            i += 1
    elif style == "solo":
        # a single melodic instrument or a piano piece (music/speech task)
        tempo = rng.uniform(70, 150)
        beat = 60 / tempo
        p = int(rng.choice([0, 1, 4, 11, 13, 21, 24, 25, 40, 41, 46, 52, 56, 60, 65, 66, 68,
                            71, 73, 75, 80, 88]))
        s.prog(0, p)
        t, mel = 0.0, 4
        while t < dur:
            d = float(rng.choice([0.5, 1.0, 1.0, 2.0]))
            mel = int(np.clip(mel + rng.choice([-2, -1, 1, 2, 3, -3]), 0, 14))
            s.note(t, 0, key + scale[mel % 7] + 12 * (mel // 7), 90, d * beat * 0.9)
            if rng.random() < 0.3:
                s.note(t, 0, key - 12 + scale[mel % 7], 60, d * beat * 0.9)
            t += d * beat
    else:  # pragma: no cover
        raise ValueError(style)
    return s.ev
