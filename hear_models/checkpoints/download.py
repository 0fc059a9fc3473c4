"""Downloading a published file into the cache: resumable, recorded, verified.

:func:`download_file` fetches one URL to a path:

- the bytes go to ``<file>.<url hash>.part``, renamed to ``<file>`` only when complete (the size the
  server announced has arrived), so a half-written file is never taken for the weights;
- an interrupted download keeps its ``.part``; the next call asks the server for the rest
  (``Range: bytes=N-``) and appends it (a server that ignores the range sends the whole
  file again, which is then written from the start);
- Google Drive's page for large files ("Google Drive can't scan this file for viruses")
  is answered as a browser would: its download form (or ``confirm=`` link, or
  ``download_warning`` cookie) gives the URL of the file itself;
- a progress bar on stderr (tqdm).

:func:`verify_record` / :func:`write_record`: projects publish no checksums, so the size
and sha256 of the file as first downloaded are written beside it (``<file>.record.json``)
and checked at every later load: a file that changed since is an error, never silently used.

``HEAR_MODELS_DOWNLOAD_BASE=http://127.0.0.1:8000`` sends every request to that server
instead (same path and query): how the tests serve the whole path, Google Drive's
confirmation page included, from a local HTTP server.
"""

from __future__ import annotations

import datetime
import http.client
import http.cookiejar
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from . import ChecksumError, atomic_write, sha256_file

BASE_ENV = "HEAR_MODELS_DOWNLOAD_BASE"
CHUNK = 1 << 20
RECORD_SUFFIX = ".record.json"
PART_SUFFIX = ".part"


class DownloadError(OSError):
    """A download failed (offline, HTTP error, interrupted, a web page instead of the
    file); the message names the URL and, where a partial file is kept, says so."""


def effective_url(url: str) -> str:
    """``url`` with its scheme and host replaced by ``$HEAR_MODELS_DOWNLOAD_BASE`` (if set)."""
    base = os.environ.get(BASE_ENV, "").strip()
    if not base:
        return url
    u, b = urllib.parse.urlsplit(url), urllib.parse.urlsplit(base)
    return urllib.parse.urlunsplit((b.scheme, b.netloc, b.path.rstrip("/") + u.path, u.query, u.fragment))


def drive_url(file_id: str) -> str:
    """The download URL of a Google Drive file id."""
    return f"https://drive.google.com/uc?export=download&id={file_id}"


class _Page(HTMLParser):
    """What a web page offers in place of the file: its title, forms (action + inputs)
    and links."""

    def __init__(self):
        super().__init__()
        self.title, self._in_title = "", False
        self.forms: List[Tuple[str, Dict[str, str]]] = []
        self.links: List[str] = []

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        if tag == "title":
            self._in_title = True
        elif tag == "form":
            self.forms.append((a.get("action", ""), {}))
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1][1][a["name"]] = a.get("value", "")
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data


def confirmation_url(page: bytes, page_url: str, cookies: http.cookiejar.CookieJar) -> Optional[str]:
    """The file's URL behind Google Drive's large-file confirmation page, or None when the
    page offers none (a quota / permission / error page).

    Today's page holds a form (``id=download-form``, action
    ``https://drive.usercontent.google.com/download``, hidden ``id``, ``export``,
    ``confirm``, ``uuid``); older pages linked ``...&confirm=TOKEN`` or set a
    ``download_warning_*`` cookie whose value is the token."""
    parser = _Page()
    parser.feed(page.decode("utf-8", "replace"))
    for action, inputs in parser.forms:
        if "confirm" in inputs or "download" in action:
            target = urllib.parse.urljoin(page_url, action or page_url)
            return target.split("?")[0] + "?" + urllib.parse.urlencode(inputs)
    for href in parser.links:
        if "confirm=" in href:
            return urllib.parse.urljoin(page_url, href)
    for c in cookies:
        if c.name.startswith("download_warning"):
            sep = "&" if "?" in page_url else "?"
            return f"{page_url}{sep}confirm={urllib.parse.quote(c.value)}"
    return None


def page_title(page: bytes) -> str:
    parser = _Page()
    parser.feed(page.decode("utf-8", "replace"))
    return " ".join(parser.title.split()) or "no title"


def _range_start(content_range: str) -> Optional[int]:
    """Start of ``Content-Range: bytes START-END/TOTAL``."""
    try:
        return int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _range_total(content_range: str) -> Optional[int]:
    try:
        total = content_range.rsplit("/", 1)[1]
        return None if total == "*" else int(total)
    except (IndexError, ValueError):
        return None


def part_path(dest: Path, url: str) -> Path:
    """Where the bytes of ``url`` collect until complete: ``<file>.<url hash>.part`` (one
    per URL, so a mirror never resumes another host's partial file)."""
    import hashlib

    tag = hashlib.sha1(url.encode()).hexdigest()[:8]
    return Path(dest).with_name(f"{Path(dest).name}.{tag}{PART_SUFFIX}")


def download_file(url: str, dest: Path, desc: str = "", progress: bool = True,
                  timeout: float = 60.0, max_pages: int = 3) -> Path:
    """Download ``url`` to ``dest`` through :func:`part_path` (resumed if present).

    Raises
    ------
    DownloadError
        Unreachable (offline), an HTTP error, a web page that is not a download
        confirmation, or the transfer stopped before the announced size (the partial file
        is kept, and the next call resumes it).
    """
    from tqdm import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest, url)
    cookies = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(cookies))
    target = url
    for _ in range(max_pages + 1):
        have = part.stat().st_size if part.is_file() else 0
        request = urllib.request.Request(effective_url(target), headers={"User-Agent": "hear-models"})
        if have:
            request.add_header("Range", f"bytes={have}-")
        try:
            response = opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as e:
            if e.code == 416 and have and _range_total(e.headers.get("Content-Range", "")) == have:
                os.replace(part, dest)  # the partial file was already complete
                return dest
            if e.code == 416:
                part.unlink()  # a range the server cannot serve: start again
                continue
            raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", e)
            raise DownloadError(f"{url}: cannot connect ({reason})") from None
        with response:
            if response.headers.get_content_type() == "text/html":
                page = response.read(4 << 20)
                nxt = confirmation_url(page, response.geturl(), cookies)
                if nxt is None:
                    raise DownloadError(f"{url}: the server sent a web page ({page_title(page)!r}), "
                                        "not the file (over quota, not shared, or moved?)")
                target = nxt
                continue
            if response.status == 206:
                if not have or _range_start(response.headers.get("Content-Range", "")) != have:
                    part.unlink(missing_ok=True)  # not the range asked for: start again
                    continue
                mode, start = "ab", have
            else:
                mode, start = "wb", 0  # the whole file (a server that ignores ranges, too)
            length = response.headers.get("Content-Length")
            total = start + int(length) if length and length.isdigit() else None
            with open(part, mode) as f, tqdm(total=total, initial=start, unit="B", unit_scale=True,
                                              unit_divisor=1024, desc=desc or dest.name,
                                              disable=not progress, file=sys.stderr, leave=False) as bar:
                try:
                    while True:
                        chunk = response.read(CHUNK)
                        if not chunk:
                            break
                        f.write(chunk)
                        bar.update(len(chunk))
                except (OSError, http.client.HTTPException) as e:
                    f.flush()
                    raise DownloadError(
                        f"{url}: download interrupted after {f.tell():,} of "
                        f"{'?' if total is None else f'{total:,}'} bytes ({type(e).__name__}); "
                        f"the partial file {part} is kept: run again to resume") from None
            got = part.stat().st_size
            if total is not None and got < total:
                raise DownloadError(f"{url}: download interrupted after {got:,} of {total:,} bytes; the "
                                    f"partial file {part} is kept: run again to resume")
            os.replace(part, dest)
            return dest
    raise DownloadError(f"{url}: more than {max_pages} web pages in place of the file")


# -- records: size and sha256 as first seen ---------------------------------------------------
def record_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + RECORD_SUFFIX)


def read_record(path: Path) -> Optional[dict]:
    try:
        rec = json.loads(record_path(path).read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and "sha256" in rec and "size" in rec else None


def write_record(path: Path, source: str, how: str) -> dict:
    """Record ``path``'s size and sha256 (``how``: "downloaded" / "found in the cache")."""
    path = Path(path)
    rec = {"file": path.name, "size": path.stat().st_size, "sha256": sha256_file(path),
           "source": source, "how": how,
           "recorded": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    atomic_write(record_path(path), lambda tmp: tmp.write_text(json.dumps(rec, indent=1) + "\n"))
    return rec


def verify_record(path: Path, rec: dict, again: str) -> None:
    """Check ``path`` against its record (size first, then sha256).

    Raises
    ------
    ChecksumError
        The file is not what was recorded; ``again`` says how to download it again.
    """
    size = Path(path).stat().st_size
    first = "at the first download" if rec.get("how") == "downloaded" else "when first found in the cache"
    when = f"recorded {first} ({rec.get('recorded', '?')})"
    if size != rec["size"]:
        raise ChecksumError(f"{path}: {size:,} bytes, but {rec['size']:,} were {when}: the file "
                            f"changed since; {again}")
    digest = sha256_file(path)
    if digest != rec["sha256"]:
        raise ChecksumError(f"{path}: sha256 {digest} does not match {rec['sha256']}, {when}: the "
                            f"file changed since; {again}")
