"""The official releases: checkpoints the projects publish, by name, fetched on first use.

    hear-models weights list            every name, its URL, size and sha256 once known, cached or not
    hear-models weights fetch NAME      download it now (a release, or every file a registry model needs)
    hear-models weights path NAME       its local file (downloaded first if needed)

Wherever a weights file is taken (``load_model``, ``--weights``, ``head=``),
``"release:NAME"`` is this file: downloaded into the cache on first use
(:mod:`~hear_models.checkpoints.download`: progress bar, temporary file renamed when
complete, interrupted downloads resumed, Google Drive's confirmation page answered), then
verified at every load. The projects publish no checksums (except openai's Whisper URLs,
which carry the sha256): the size and sha256 of the first download are recorded beside
the file and every later load checks them.

Where the files go: the Whisper-AT heads and Whisper backbones into openai-whisper's cache
(``$XDG_CACHE_HOME/whisper``, default ``~/.cache/whisper``), under the names the
``whisper-at`` package and openai-whisper use, so files either of them downloaded are
found (and recorded at first use); the others into ``$HEAR_MODELS_CACHE/official/<project>/``.
A file put there by hand is used the same way (its size and sha256 are recorded at first use).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..registry import LOW_DIM_SIZES, WHISPER_AT_SIZES, slug
from . import RELEASE_PREFIX, ChecksumError, cache_dir, sha256_file
from .download import (DownloadError, download_file, drive_url, part_path, read_record, record_path,
                       verify_record, write_record)

@dataclass(frozen=True)
class Release:
    name: str
    family: str  # "Whisper-AT head", "Whisper", "ATST", "ATST-Frame", "MaskSpec"
    filename: str
    urls: Tuple[str, ...]  # tried in order; the first is the one the project's code uses
    folder: str  # "whisper": openai-whisper's cache; else a folder of $HEAR_MODELS_CACHE/official
    what: str
    source: str  # where the URL is published
    sha256: str = ""  # pinned when the project publishes it (openai)
    page: str = ""  # a page to open in a browser, where the download URL is not one

    def path(self, root: Optional[os.PathLike] = None) -> Path:
        if root is not None:
            return Path(root) / self.filename
        if self.folder == "whisper":
            return whisper_cache() / self.filename
        return cache_dir() / "official" / self.folder / self.filename


def whisper_cache() -> Path:
    """openai-whisper's (and whisper-at's) download folder."""
    default = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(os.getenv("XDG_CACHE_HOME", default)) / "whisper"


# -- the table ---------------------------------------------------------------------------------
# Whisper-AT TL-Tr heads ({size}_ori.pth) and TL-Tr-512 heads ({size}_low.pth, for small,
# medium and large only): the Dropbox ids of the whisper-at package's code (PyPI whisper-at
# 0.5, whisper_at/__init__.py _MODELS_AT) first; github YuanGongND/whisper-at
# pretrained_models/README.md lists other ids for some of them, tried second (they may be
# different uploads: whichever answers first is recorded). Whisper-AT's "large" is large-v2.
_AT_PACKAGE = {
    "tiny.en": "atq9so6w0qug5ai", "tiny": "cib4q4iz6g758l0", "base.en": "qtzgsbuquoz0afn",
    "base": "2odwh42u6e9ger7", "small.en": "cyx50ycl1ul7lji", "small.en_low": "507o66zgl8v6ddd",
    "small": "jftj9s0kr4ycvr1", "small_low": "a1x0416v58f7wrf", "medium.en": "bbvylvmgns8ja4p",
    "medium.en_low": "2q5wprr8f9gti5t", "medium": "65aabayr7o819az", "medium_low": "0mnfmcasram4n6o",
    "large-v1": "b8x2en1fdzc8nhk", "large-v1_low": "5o79h70wyla8jlk", "large-v2": "3zxpyvdrxy22eq7",
    "large-v2_low": "jw2rh4uylhqgn85",
}
_AT_README = {
    "tiny": "06f2h29aki39q9r", "base": "4vn2oatda321y7h", "small": "5zqzs3e47zwhjd3",
    "small_low": "3lxlmh437tneifl", "medium": "93zfj4afmv0qfyl", "medium_low": "g66h1vtn1u426dj",
    "large-v2": "94x7wqw4hscpls0", "large-v2_low": "wk5dyxustpji06c",
}
def _dropbox(key: str) -> Tuple[str, ...]:
    file = f"{key}.pth" if key.endswith("_low") else f"{key}_ori.pth"
    ids = [_AT_PACKAGE[key]] + ([_AT_README[key]] if key in _AT_README else [])
    return tuple(f"https://www.dropbox.com/s/{i}/{file}?dl=1" for i in ids)


def _head_releases() -> List[Release]:
    out = []
    for size in WHISPER_AT_SIZES:
        for low in (False, True):
            if low and size not in LOW_DIM_SIZES:
                continue
            key = f"{size}_low" if low else size
            kind = "TL-Tr-512 (low-dimensional projection)" if low else "TL-Tr"
            out.append(Release(
                f"whisper_at_head_{slug(size)}_{'tltr512' if low else 'tltr'}", "Whisper-AT head",
                f"{key}.pth" if low else f"{size}_ori.pth", _dropbox(key), "whisper",
                f"Whisper-AT {kind} AudioSet head (527 classes) for Whisper {size}",
                "whisper-at 0.5 (PyPI) whisper_at/__init__.py; github YuanGongND/whisper-at "
                "pretrained_models/README.md"))
    return out


_AUDIOSSL = "github Audio-WestlakeU/audiossl README"
_MASKSPEC = "github WangHelin1997/MaskSpec README"
_OTHERS = [
    Release("atst_small", "ATST", "small.ckpt",
            ("https://checkpointstorage.oss-cn-beijing.aliyuncs.com/atst/small.ckpt",), "atst",
            "ATST small (384 x 12 blocks), AudioSet pretraining, Lightning checkpoint", _AUDIOSSL),
    Release("atst_base", "ATST", "base.ckpt",
            ("https://checkpointstorage.oss-cn-beijing.aliyuncs.com/atst/base.ckpt",), "atst",
            "ATST base (768 x 12 blocks), AudioSet pretraining, Lightning checkpoint", _AUDIOSSL),
    Release("atst_frame_small", "ATST-Frame", "atstframe_small.ckpt",
            (drive_url("1xZoOTuxV415icYONYbeFQzgrmJQf4a4B"),), "atst_frame",
            "ATST-Frame small, AudioSet pretraining (model weights)", _AUDIOSSL,
            page="https://drive.google.com/file/d/1xZoOTuxV415icYONYbeFQzgrmJQf4a4B/view"),
    Release("atst_frame_base", "ATST-Frame", "atstframe_base.ckpt",
            (drive_url("1bGJSZWlAIIJ6GL5Id5dW0PTB72DL-QDQ"),), "atst_frame",
            "ATST-Frame base, AudioSet pretraining (model weights)", _AUDIOSSL,
            page="https://drive.google.com/file/d/1bGJSZWlAIIJ6GL5Id5dW0PTB72DL-QDQ/view"),
    Release("maskspec_base_pretrained", "MaskSpec", "maskspec_base_pretrained.pth",
            (drive_url("1hmbsqmMEB7j5MNq8L9w_htOe7UW7QKwb"),), "maskspec",
            "MaskSpec base, masked-spectrogram pretraining on AudioSet (MAE encoder + decoder)", _MASKSPEC,
            page="https://drive.google.com/file/d/1hmbsqmMEB7j5MNq8L9w_htOe7UW7QKwb/view"),
    Release("maskspec_base_audioset", "MaskSpec", "maskspec_base_audioset.pth",
            (drive_url("1TwP9JMq6EViaSXAhpNMuQW56RIbk-v-v"),), "maskspec",
            "MaskSpec base fine-tuned on AudioSet (ViT + 527-class head)", _MASKSPEC,
            page="https://drive.google.com/file/d/1TwP9JMq6EViaSXAhpNMuQW56RIbk-v-v/view"),
]


def whisper_release(model: str) -> Release:
    """openai-whisper's checkpoint ``model`` (a key of ``whisper._MODELS``), sha256 from its URL."""
    import whisper

    if model not in whisper._MODELS:
        raise KeyError(f"unknown openai-whisper model {model!r}; available: {', '.join(whisper._MODELS)}")
    url = whisper._MODELS[model]
    return Release(f"openai_whisper_{slug(model)}", "Whisper", url.rsplit("/", 1)[1], (url,), "whisper",
                   f"openai Whisper {model} (encoder + decoder)", "openai-whisper whisper/__init__.py _MODELS",
                   sha256=url.split("/")[-2])


def releases(with_backbones: bool = True) -> Dict[str, Release]:
    """Every named release (``with_backbones``: also the Whisper backbones the Whisper-AT
    heads need), by name, in table order."""
    table = _head_releases() + _OTHERS
    if with_backbones:
        table += [whisper_release(s) for s in WHISPER_AT_SIZES]
    return {r.name: r for r in table}


def get_release(name: str) -> Release:
    table = releases()
    if name in table:
        return table[name]
    import difflib

    close = difflib.get_close_matches(name, list(table), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise KeyError(f"unknown release {name!r}; {hint}releases: hear-models weights list")


# -- fetching ----------------------------------------------------------------------------------
def fetch(name_or_release, progress: bool = True, force: bool = False,
          root: Optional[os.PathLike] = None) -> Path:
    """The local file of a release: verified against its record if cached, else downloaded
    (URLs in order), recorded and returned.

    Parameters
    ----------
    name_or_release : str or Release
    force : bool
        Delete the cached file, its record and partial downloads first.
    root : path, optional
        Another folder for the file (``load_whisper``'s ``download_root``).

    Raises
    ------
    DownloadError
        No URL could be downloaded; the message names the URL(s), the reason and where to
        put the file by hand.

    Two processes fetching the same file (parallel jobs sharing a cache) do not both
    download it: the second waits on a lock beside the file, then finds it complete.
    ChecksumError
        The cached file differs from its record (or from the published sha256).
    """
    r = name_or_release if isinstance(name_or_release, Release) else get_release(name_or_release)
    dest = r.path(root)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(dest):  # one process at a time per file: a second one waits, then finds it
        return _fetch_locked(r, dest, progress, force)


@contextlib.contextmanager
def _exclusive(dest: Path):
    """An exclusive lock on ``<file>.lock`` (POSIX ``flock``; elsewhere, no lock)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(dest.with_name(dest.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _fetch_locked(r: Release, dest: Path, progress: bool, force: bool) -> Path:
    again = f"delete it or run `hear-models weights fetch --force {r.name}` to download it again"
    if force:
        for p in [dest, record_path(dest)] + [part_path(dest, u) for u in r.urls]:
            p.unlink(missing_ok=True)
    if dest.is_file():
        rec = read_record(dest)
        if rec is None:  # put there by hand, or by whisper-at / openai-whisper
            if r.sha256 and sha256_file(dest) != r.sha256:
                raise ChecksumError(f"{dest}: sha256 does not match the published {r.sha256}: the file is "
                                    f"corrupt or another version; {again}")
            write_record(dest, "found in the cache", "found in the cache")
            return dest
        verify_record(dest, rec, again)
        if r.sha256 and rec["sha256"] != r.sha256:
            raise ChecksumError(f"{dest}: sha256 {rec['sha256']} is not the published {r.sha256}; {again}")
        return dest
    failures = []
    for url in r.urls:
        try:
            download_file(url, dest, desc=r.name, progress=progress)
        except DownloadError as e:
            failures.append(str(e))
            if part_path(dest, url).is_file():
                break  # interrupted: the next call resumes this URL, no mirror is mixed in
            continue
        if r.sha256:
            digest = sha256_file(dest)
            if digest != r.sha256:
                dest.unlink()
                raise ChecksumError(f"{url}: the downloaded file's sha256 {digest} is not the published "
                                    f"{r.sha256}; it was deleted: try again")
        write_record(dest, url, "downloaded")
        return dest
    by_hand = f"download {r.page or r.urls[0]} on a machine with internet and put it at {dest}"
    raise DownloadError(f"cannot download {r.name} ({r.filename}): {'; '.join(failures)}. Offline? "
                        f"{by_hand} (its size and sha256 are recorded at first use)")


def cached(r: Release) -> dict:
    """What the cache holds of ``r``: ``{"state": "cached"|"partial"|"absent", "size",
    "sha256"}`` (size / sha256 from the record; a cached file without a record: its size)."""
    dest = r.path()
    if dest.is_file():
        rec = read_record(dest) or {"size": dest.stat().st_size, "sha256": r.sha256}
        return {"state": "cached", "size": rec["size"], "sha256": rec["sha256"] or r.sha256}
    parts = [part_path(dest, u) for u in r.urls if part_path(dest, u).is_file()]
    if parts:
        return {"state": "partial", "size": sum(p.stat().st_size for p in parts), "sha256": r.sha256}
    return {"state": "absent", "size": None, "sha256": r.sha256}


def resolve_release_path(path: str) -> str:
    """``"release:NAME"`` -> the fetched local file; any other string unchanged."""
    if isinstance(path, str) and path.startswith(RELEASE_PREFIX):
        return os.fspath(fetch(path[len(RELEASE_PREFIX):]))
    return path


__all__ = ["Release", "RELEASE_PREFIX", "releases", "get_release", "whisper_release", "fetch", "cached",
           "resolve_release_path", "DownloadError", "whisper_cache", "WHISPER_AT_SIZES", "LOW_DIM_SIZES"]
