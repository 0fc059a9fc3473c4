"""Official releases by name: the whole download path against a local HTTP server on
127.0.0.1 (``HEAR_MODELS_DOWNLOAD_BASE``): first download, record, verification at every
load, an interrupted download that resumes, a server that ignores ranges, Google Drive's
large-file confirmation, a file that changed since its record, a published sha256 that does
not match, offline errors, a file put in place by hand, and registered models end to end."""

import hashlib
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from hear_models.checkpoints import ChecksumError
from hear_models.checkpoints.download import DownloadError, part_path, read_record
from hear_models.checkpoints.releases import Release, fetch, get_release, releases
from hear_models.cli import main

from .conftest import need, noise
from .test_atst import official_state


class Files:
    """What the local server serves: ``files[path] = bytes``; ``cut[path] = n``: the next
    whole-file answer stops after n bytes (announcing the full length); ``no_ranges``:
    Range headers are ignored; ``drive[id] = bytes``: Google Drive's /uc answers with its
    confirmation page (``drive_style``: "form", "link" or "cookie"), then the file."""

    def __init__(self):
        self.files, self.cut, self.drive = {}, {}, {}
        self.no_ranges, self.drive_style, self.quota_page = False, "form", False
        self.log = []  # (path, query, Range header)


def _handler(state: Files):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _send(self, code, body, ctype="application/octet-stream", headers=()):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            rng = self.headers.get("Range")
            state.log.append((url.path, query, rng))
            if url.path == "/uc" and query.get("id") in state.drive:
                if state.quota_page:
                    return self._send(200, b"<html><head><title>Google Drive - Quota exceeded</title>"
                                           b"</head><body>Too many users</body></html>", "text/html")
                if state.drive_style == "cookie" and "confirm" in query:
                    return self._file(state.drive[query["id"]], rng, "/drive")
                if state.drive_style == "link" and query.get("confirm") == "abc":
                    return self._file(state.drive[query["id"]], rng, "/drive")
                page = (b"<html><head><title>Google Drive - Virus scan warning</title></head><body>"
                        b"<p>Google Drive can't scan this file for viruses.</p>")
                if state.drive_style == "form":  # today's page: a form to drive.usercontent.google.com
                    page += (b'<form id="download-form" action="https://drive.usercontent.google.com/download"'
                             b' method="get"><input type="submit" value="Download anyway"/>'
                             b'<input type="hidden" name="id" value="' + query["id"].encode() + b'">'
                             b'<input type="hidden" name="export" value="download">'
                             b'<input type="hidden" name="confirm" value="t">'
                             b'<input type="hidden" name="uuid" value="1234-abcd"></form>')
                elif state.drive_style == "link":
                    page += (b'<a id="uc-download-link" href="/uc?export=download&amp;confirm=abc&amp;id='
                             + query["id"].encode() + b'">Download anyway</a>')
                headers = [("Set-Cookie", "download_warning_123=xyz; Path=/")] if state.drive_style == "cookie" else []
                return self._send(200, page + b"</body></html>", "text/html; charset=utf-8", headers)
            if url.path == "/download" and query.get("confirm") == "t" and query.get("uuid") == "1234-abcd":
                return self._file(state.drive[query["id"]], rng, "/drive")
            if url.path in state.files:
                return self._file(state.files[url.path], rng, url.path)
            self._send(404, b"not found", "text/plain")

        def _file(self, body, rng, key):
            if rng and not state.no_ranges:
                start = int(rng.split("=")[1].split("-")[0])
                if start >= len(body):
                    return self._send(416, b"", headers=[("Content-Range", f"bytes */{len(body)}")])
                return self._send(206, body[start:],
                                  headers=[("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")])
            n = state.cut.pop(key, None)
            if n is None:
                return self._send(200, body)
            self.send_response(200)  # announces the whole file, sends n bytes, hangs up
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:n])
            self.wfile.flush()
            self.close_connection = True

    return Handler


@pytest.fixture
def server(monkeypatch, tmp_path):
    """A local server standing in for every host (the base-URL override), with an empty
    cache and an empty openai-whisper cache."""
    state = Files()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HEAR_MODELS_DOWNLOAD_BASE", f"http://127.0.0.1:{httpd.server_address[1]}")
    monkeypatch.setenv("HEAR_MODELS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    yield state
    httpd.shutdown()
    httpd.server_close()


def payload(n=300_000, seed=0):
    return bytes(torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(seed),
                               dtype=torch.uint8).tolist())


def release(urls, sha256="", name="test_file"):
    return Release(name, "test", "file.bin", tuple(urls), "test", "a test file", "tests", sha256=sha256)


def test_first_download_is_recorded_and_later_loads_are_verified(server, tmp_path):
    data = payload()
    server.files["/files/file.bin"] = data
    r = release(["https://example.org/files/file.bin"])
    path = fetch(r, progress=False)
    assert path == tmp_path / "cache" / "official" / "test" / "file.bin"
    assert path.read_bytes() == data
    rec = read_record(path)
    assert rec["size"] == len(data) and rec["sha256"] == hashlib.sha256(data).hexdigest()
    assert rec["how"] == "downloaded" and rec["source"] == "https://example.org/files/file.bin"
    assert not list(path.parent.glob("*.part"))
    n = len(server.log)
    assert fetch(r, progress=False) == path and len(server.log) == n  # cached: no request


def test_interrupted_download_resumes_where_it_stopped(server):
    data = payload(500_000, seed=1)
    server.files["/files/file.bin"] = data
    server.cut["/files/file.bin"] = 123_456
    r = release(["https://example.org/files/file.bin"])
    with pytest.raises(DownloadError, match=r"interrupted after 123,456 of 500,000 bytes.*run again to resume"):
        fetch(r, progress=False)
    dest = r.path()
    assert not dest.exists()  # never a half file under the real name
    assert part_path(dest, r.urls[0]).stat().st_size == 123_456
    path = fetch(r, progress=False)
    assert server.log[-1][2] == "bytes=123456-"  # asked for the rest only
    assert path.read_bytes() == data
    assert read_record(path)["sha256"] == hashlib.sha256(data).hexdigest()
    assert not part_path(dest, r.urls[0]).exists()


def test_server_that_ignores_ranges_sends_the_whole_file_again(server):
    data = payload(200_000, seed=2)
    server.files["/f.bin"] = data
    server.cut["/f.bin"] = 50_000
    server.no_ranges = True
    r = release(["https://example.org/f.bin"])
    with pytest.raises(DownloadError, match="interrupted"):
        fetch(r, progress=False)
    assert fetch(r, progress=False).read_bytes() == data  # written from the start, not appended


@pytest.mark.parametrize("style", ["form", "link", "cookie"])
def test_google_drive_large_file_confirmation(server, style):
    """Drive answers a large file with a virus-scan page; today's page holds a form posting
    to drive.usercontent.google.com (rewritten to the local server too), older ones a
    confirm= link or a download_warning cookie."""
    data = payload(100_000, seed=3)
    server.drive["FILEID"] = data
    server.drive_style = style
    r = release(["https://drive.google.com/uc?export=download&id=FILEID"])
    assert fetch(r, progress=False).read_bytes() == data
    assert server.log[0][0] == "/uc" and len(server.log) == 2


def test_google_drive_page_without_a_download_is_named(server):
    server.drive["FILEID"] = b"x"
    server.quota_page = True
    r = release(["https://drive.google.com/uc?export=download&id=FILEID"])
    with pytest.raises(DownloadError, match="web page .*Quota exceeded.* not the file"):
        fetch(r, progress=False)
    assert not r.path().exists()


def test_file_that_changed_since_its_record_is_refused(server):
    data = payload(50_000, seed=4)
    server.files["/f.bin"] = data
    r = release(["https://example.org/f.bin"])
    path = fetch(r, progress=False)
    changed = bytearray(data)
    changed[1000] ^= 0xFF
    path.write_bytes(bytes(changed))  # same size, one byte flipped
    with pytest.raises(ChecksumError, match="sha256 .* does not match .*recorded at the first download.*changed since.*--force"):
        fetch(r, progress=False)
    path.write_bytes(data[:-10])
    with pytest.raises(ChecksumError, match="49,990 bytes, but 50,000 were recorded"):
        fetch(r, progress=False)
    assert fetch(r, progress=False, force=True).read_bytes() == data  # --force: downloaded again


def test_published_sha256_is_enforced(server):
    data = payload(20_000, seed=5)
    server.files["/m/x.pt"] = data
    good = hashlib.sha256(data).hexdigest()
    assert fetch(release(["https://h/m/x.pt"], sha256=good), progress=False).read_bytes() == data
    bad = release(["https://h/m/x.pt"], sha256="0" * 64, name="other")
    bad.path().unlink()
    (bad.path().parent / ("x.pt" + ".record.json")).unlink(missing_ok=True)
    with pytest.raises(ChecksumError, match="is not the published 0000"):
        fetch(bad, progress=False)
    assert not bad.path().exists()  # a file that is not the published one is not kept


def test_mirror_is_tried_when_the_first_url_fails(server):
    data = payload(10_000, seed=6)
    server.files["/mirror/f.bin"] = data
    r = release(["https://example.org/gone/f.bin", "https://example.org/mirror/f.bin"])
    path = fetch(r, progress=False)
    assert path.read_bytes() == data and read_record(path)["source"].endswith("/mirror/f.bin")


def test_offline_error_names_the_url_and_where_to_put_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("HEAR_MODELS_DOWNLOAD_BASE", "http://127.0.0.1:9")  # nothing listens
    monkeypatch.setenv("HEAR_MODELS_CACHE", str(tmp_path))
    r = get_release("atst_base")
    with pytest.raises(DownloadError) as e:
        fetch(r, progress=False)
    msg = str(e.value)
    assert "https://checkpointstorage.oss-cn-beijing.aliyuncs.com/atst/base.ckpt" in msg
    assert f"put it at {tmp_path}/official/atst/base.ckpt" in msg and "cannot connect" in msg
    # put there by hand: used, and recorded at first use
    r.path().parent.mkdir(parents=True, exist_ok=True)
    r.path().write_bytes(b"by hand")
    assert fetch(r, progress=False) == r.path()
    assert read_record(r.path())["how"] == "found in the cache"
    drive = get_release("maskspec_base_audioset")
    with pytest.raises(DownloadError, match="download https://drive.google.com/file/d/1TwP9JMq6EViaSXAhpNMuQW56RIbk-v-v/view"):
        fetch(drive, progress=False)


def test_cli_offline_error_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HEAR_MODELS_DOWNLOAD_BASE", "http://127.0.0.1:9")
    monkeypatch.setenv("HEAR_MODELS_CACHE", str(tmp_path))
    assert main(["weights", "fetch", "atst_small"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: cannot download atst_small (small.ckpt)")
    assert main(["weights", "path", "atst_smal"]) == 2
    assert "did you mean atst_small" in capsys.readouterr().err
    assert main(["weights", "fetch", "openai_whisper_tiny_e"]) == 2  # a release name: offered too
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean openai_whisper_tiny_en" in err and "weights list" in err


def test_head_urls_are_the_whisper_at_packages():
    """The first URL of every Whisper-AT head is the one the whisper-at package downloads."""
    whisper_at = need("whisper_at", reason="pip install --no-deps whisper-at==0.5")
    heads = [r for r in releases().values() if r.family == "Whisper-AT head"]
    assert len(heads) == 16
    for r in heads:
        key = r.filename.replace("_ori.pth", "").replace(".pth", "")
        assert whisper_at._MODELS_AT[key] == r.urls[0], r.name
    import whisper

    for size in ("tiny.en", "large-v2"):
        w = get_release(f"openai_whisper_{size.replace('.', '_').replace('-', '_')}")
        assert w.urls == (whisper._MODELS[size],) and w.sha256 == whisper._MODELS[size].split("/")[-2]


def test_registered_atst_downloads_on_first_use(server, capsys):
    """``atst_small`` end to end: the first load downloads (here: an official-format file
    from the local server), `weights list` shows it cached with its size and sha256,
    `weights path` gives the file, and a changed file stops the next load."""
    from hear_models import create_model

    buf = tmp = get_release("atst_small").path().parent
    tmp.mkdir(parents=True, exist_ok=True)
    sd = {"model.teacher.encoder." + k: v for k, v in official_state(D=192, layers=2, seed=7).items()}
    torch.save({"state_dict": sd, "pytorch-lightning_version": "1.6.0"}, buf / "upload.ckpt")
    data = (buf / "upload.ckpt").read_bytes()
    (buf / "upload.ckpt").unlink()
    server.files["/atst/small.ckpt"] = data
    model = create_model("atst_small", precision="fp32")
    emb, ts = model.timestamp_embeddings(noise(1, 1.0, 16000))
    assert emb.shape[-1] == 2 * 192 and torch.isfinite(emb).all()

    assert main(["weights", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["atst_small"]["state"] == "cached" and rows["atst_small"]["size"] == len(data)
    assert rows["atst_small"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert rows["atst_base"]["state"] == "absent"
    assert main(["weights", "path", "atst_small"]) == 0
    assert capsys.readouterr().out.strip() == str(get_release("atst_small").path())
    assert main(["weights", "list"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("atst_small "))
    assert "cached" in line and hashlib.sha256(data).hexdigest()[:16] in line

    get_release("atst_small").path().write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(ChecksumError, match="changed since"):
        create_model("atst_small")


def test_registered_whisper_at_downloads_backbone_and_head(server, monkeypatch, tmp_path, capsys):
    """``whisper_at_tiny_en_tltr``: the openai backbone (checked against the sha256 its URL
    carries) and the official TL-Tr head, both downloaded on first use into
    openai-whisper's cache; the scene embedding ends with the head's 527 logits."""
    import whisper

    from hear_models import create_model
    from hear_models.weights import weights_path

    whisper_at_model = need("whisper_at.model", reason="pip install --no-deps whisper-at==0.5")

    monkeypatch.setenv("HEAR_MODELS_CACHE", str(tmp_path / "real"))  # the converted offline tiny.en
    backbone = weights_path("whisper_tiny_en").read_bytes()
    monkeypatch.setenv("HEAR_MODELS_CACHE", str(tmp_path / "cache"))
    digest = hashlib.sha256(backbone).hexdigest()
    url = f"https://openaipublic.azureedge.net/main/whisper/models/{digest}/tiny.en.pt"
    monkeypatch.setitem(whisper._MODELS, "tiny.en", url)  # the published sha256 of what we serve
    server.files[urllib.parse.urlsplit(url).path] = backbone
    torch.manual_seed(0)
    official = whisper_at_model.ATModel(n_layer=4, rep_dim=384, mode="tl_tr_1_8")  # tiny's head
    head_file = tmp_path / "head.pth"
    torch.save({f"at_model.{k}": v for k, v in official.state_dict().items()}, head_file)
    server.files["/s/atq9so6w0qug5ai/tiny.en_ori.pth"] = head_file.read_bytes()

    model = create_model("whisper_at_tiny_en_tltr", precision="fp32")
    scene = model.scene_embeddings(noise(1, 2.0, 16000))
    assert scene.shape == (1, 384 + 527)
    # `tag --model`: the row's backbone and head, AudioSet's label names
    import soundfile as sf

    sf.write(tmp_path / "a.wav", noise(1, 2.0, 16000)[0].numpy(), 16000)
    assert main(["tag", str(tmp_path / "a.wav"), "--model", "whisper_at_tiny_en_tltr", "--no-text", "--json",
                 "--top-k", "3"]) == 0
    tags = json.loads(capsys.readouterr().out)[str(tmp_path / "a.wav")]["audio_tag"]
    assert len(tags) == 1 and len(tags[0]["labels"]) == 3 and all(x["label"] for x in tags[0]["labels"])
    cache = tmp_path / "xdg" / "whisper"
    assert sorted(p.name for p in cache.glob("*.pth")) == ["tiny.en_ori.pth"]
    assert (cache / "tiny.en.pt").read_bytes() == backbone
    assert read_record(cache / "tiny.en.pt")["sha256"] == digest


def test_registered_maskspec_downloads_from_google_drive(server):
    """``maskspec_base_audioset`` end to end through Google Drive's confirmation page: an
    official-format fine-tuned file (small, seeded random) is downloaded on first use and
    its 527 logits end the scene embedding."""
    from hear_models import create_model

    from .test_maskspec_official import finetuned_state_dict, save_official

    folder = get_release("maskspec_base_audioset").path().parent
    folder.mkdir(parents=True, exist_ok=True)
    save_official(folder / "upload.pth", finetuned_state_dict())
    server.drive["1TwP9JMq6EViaSXAhpNMuQW56RIbk-v-v"] = (folder / "upload.pth").read_bytes()
    (folder / "upload.pth").unlink()
    model = create_model("maskspec_base_audioset", precision="fp32")
    scene = model.scene_embeddings(noise(1, 2.0, 32000))
    width = model.encoder.encoder.dims.width
    assert scene.shape == (1, width + 527) and torch.isfinite(scene).all()
    assert [entry[0] for entry in server.log] == ["/uc", "/download"]


def test_registered_atst_frame_downloads_from_google_drive(server):
    """``atst_frame_small`` end to end: an official-layout Lightning checkpoint (tiny,
    seeded random) served behind Drive's confirmation form, loaded by the ATST-Frame model."""
    from hear_models import create_model

    from .test_atst_frame import DEPTH, random_reference, write_lightning

    folder = get_release("atst_frame_small").path().parent
    folder.mkdir(parents=True, exist_ok=True)
    write_lightning(folder / "upload.ckpt", random_reference())
    server.drive["1xZoOTuxV415icYONYbeFQzgrmJQf4a4B"] = (folder / "upload.ckpt").read_bytes()
    (folder / "upload.ckpt").unlink()
    model = create_model("atst_frame_small", precision="fp32")
    emb, ts = model.timestamp_embeddings(noise(1, 1.0, 16000))
    assert emb.shape[-1] == DEPTH * model.encoder.encoder.dims.width and torch.isfinite(emb).all()
    assert [entry[0] for entry in server.log] == ["/uc", "/download"]


def test_concurrent_fetches_download_once(server):
    """Two fetches of the same file at once (parallel jobs sharing a cache): one download,
    both get the complete file."""
    data = payload(400_000, seed=8)
    server.files["/f.bin"] = data
    r = release(["https://example.org/f.bin"])
    results, errors = [], []

    def run():
        try:
            results.append(fetch(r, progress=False).read_bytes())
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [data] * 3
    assert [entry[0] for entry in server.log] == ["/f.bin"]  # downloaded once


def test_google_drive_download_resumes_after_its_confirmation_page(server):
    """An interrupted Drive download resumes: the confirmation page is answered again and
    the rest of the file asked for with a range."""
    data = payload(300_000, seed=9)
    server.drive["FILEID"] = data
    server.cut["/drive"] = 100_000
    r = release(["https://drive.google.com/uc?export=download&id=FILEID"])
    with pytest.raises(DownloadError, match="interrupted after 100,000 of 300,000 bytes"):
        fetch(r, progress=False)
    assert fetch(r, progress=False).read_bytes() == data
    assert server.log[-1][0] == "/download" and server.log[-1][2] == "bytes=100000-"
