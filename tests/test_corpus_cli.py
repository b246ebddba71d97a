"""`lmtool corpus list|download` against a local HTTP server on 127.0.0.1 (never a real host)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

TEXT = ("The first line of a tiny corpus.\n\nA second paragraph, longer than the first.\n" * 200)


class Server:
    """Serves files from a directory; honours `Range: bytes=N-` unless `ranges` is off.
    Records every request's path and Range header."""

    def __init__(self, root: Path, ranges: bool = True):
        self.root, self.ranges, self.requests = root, ranges, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                outer.requests.append((self.path, self.headers.get("Range")))
                path = outer.root / self.path.lstrip("/")
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start = 0
                header = self.headers.get("Range")
                if header and outer.ranges:
                    start = int(header.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])

            def log_message(self, *args):  # keep the test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def fixtures(tmp_path):
    """A plain text, a tar.gz of labelled reviews, a zip of LM splits, and a .gz."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "plain.txt").write_bytes(TEXT.encode())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for member, text in [
            ("reviews/train/pos/1.txt", "Loved it.<br />Would watch again."),
            ("reviews/train/neg/2.txt", "Not good\tat all."),
            ("reviews/train/pos/3.txt", "Great fun."),
            ("reviews/unsup/4.txt", "An unlabelled\nreview."),
            ("reviews/unsup/5.txt", "Another one."),
        ]:
            data = text.encode()
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (www / "reviews.tar.gz").write_bytes(buf.getvalue())
    with zipfile.ZipFile(www / "lm.zip", "w") as z:
        z.writestr("lm/train.tokens", "train text\n")
        z.writestr("lm/valid.tokens", "valid text\n")
        z.writestr("lm/table.tsv", 'sentence\tlabel\nit \'s "fine" .\t1\nbad .\t0\n')
    (www / "one.txt.gz").write_bytes(gzip.compress(b"gzipped text\n"))
    return www


def _manifest(tmp_path: Path, url: str, www: Path, **overrides) -> Path:
    def entry(name, filename, fmt, unpack, sha=True):
        data = (www / filename).read_bytes()
        f = {
            "urls": [f"{url}/{filename}"],
            "filename": filename,
            "format": fmt,
            "size": len(data),
            "sha256": _sha256(data) if sha else None,
            "md5": None,
            "unpack": unpack,
        }
        f.update(overrides.get(name, {}))
        return {"name": name, "description": f"the {name} fixture", "licence": "CC0",
                "files": [f]}

    corpora = [
        entry("plain", "plain.txt", "plain", [{"members": "plain.txt", "to": "train.txt"}]),
        entry("reviews", "reviews.tar.gz", "tar.gz", [
            {"members": "reviews/train/pos/*.txt", "to": "train.tsv", "label": "positive",
             "replace": {"<br />": " "}},
            {"members": "reviews/train/neg/*.txt", "to": "train.tsv", "label": "negative"},
            {"members": "reviews/unsup/*.txt", "to": "unlabelled.txt"},
        ]),
        entry("lm", "lm.zip", "zip", [
            {"members": "lm/train.tokens", "to": "train.txt"},
            {"members": "lm/valid.tokens", "to": "valid.txt"},
            {"members": "lm/table.tsv", "to": "table.tsv", "table": {
                "delimiter": "\t", "header": True, "text": ["sentence"], "label": "label",
                "labels": {"0": "negative", "1": "positive"}}},
        ], sha=False),
        entry("gz", "one.txt.gz", "gz", []),
    ]
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"corpora": corpora}))
    return path


def test_list_shows_every_corpus_of_the_shipped_manifest(cli):
    result = cli("corpus", "list", "--format", "json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    names = {r["name"] for r in rows}
    assert {"tiny-shakespeare", "wikitext-2", "wikitext-103", "imdb", "sst-2", "ag-news"} <= names
    shakespeare = next(r for r in rows if r["name"] == "tiny-shakespeare")
    assert shakespeare["verification"] == "sha256" and shakespeare["size"] == 1115394
    text = cli("corpus", "list")
    assert text.exit_code == 0
    assert "unverified" in text.stdout  # entries with no known checksum say so
    assert all(r["name"] in text.stdout for r in rows)


def test_verified_download_unpacks_and_prints_the_path(cli, tmp_path, fixtures):
    with Server(fixtures) as server:
        manifest = _manifest(tmp_path, server.url, fixtures)
        result = cli("corpus", "download", "plain", "--manifest", manifest,
                     "--cache-dir", tmp_path / "cache")
        assert result.exit_code == 0, result.stderr
        out = Path(result.stdout.strip())
        assert out == tmp_path / "cache" / "plain" / "text"
        assert (out / "train.txt").read_text() == TEXT
        assert "unverified" not in result.stderr
        # A second call uses the cache: no request reaches the server.
        n = len(server.requests)
        again = cli("corpus", "download", "plain", "--manifest", manifest,
                    "--cache-dir", tmp_path / "cache")
        assert again.exit_code == 0 and again.stdout == result.stdout
        assert len(server.requests) == n
        listed = cli("corpus", "list", "--manifest", manifest, "--cache-dir", tmp_path / "cache",
                     "--format", "json")
        assert json.loads(listed.stdout)[0]["cached"] == str(out)


def test_tar_gz_becomes_tsv_and_paragraphs(cli, tmp_path, fixtures, monkeypatch):
    with Server(fixtures) as server:
        monkeypatch.setenv("LMTOOL_CORPUS_MANIFEST", str(_manifest(tmp_path, server.url, fixtures)))
        result = cli("corpus", "download", "reviews")  # default cache: $LMTOOL_CACHE/corpora
    assert result.exit_code == 0, result.stderr
    out = Path(result.stdout.strip())
    assert out.parent.parent.name == "corpora"
    assert (out / "train.tsv").read_text().splitlines() == [
        "label\ttext",
        "positive\tLoved it. Would watch again.",
        "negative\tNot good at all.",
        "positive\tGreat fun.",
    ]
    assert (out / "unlabelled.txt").read_text() == "An unlabelled review.\n\nAnother one.\n"


def test_unverified_zip_is_reported_and_tables_convert(cli, tmp_path, fixtures):
    with Server(fixtures) as server:
        manifest = _manifest(tmp_path, server.url, fixtures)
        result = cli("corpus", "download", "lm", "--manifest", manifest,
                     "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 0, result.stderr
    assert "unverified" in result.stderr and "lm.zip" in result.stderr
    out = Path(result.stdout.strip())
    assert (out / "train.txt").read_text() == "train text\n"
    assert (out / "valid.txt").read_text() == "valid text\n"
    assert (out / "table.tsv").read_text() == (
        'label\ttext\npositive\tit \'s "fine" .\nnegative\tbad .\n'
    )
    listed = cli("corpus", "list", "--manifest", manifest, "--format", "json")
    assert {r["name"]: r["verification"] for r in json.loads(listed.stdout)}["lm"] == "unverified"


def test_gz_without_rules_is_extracted_whole(cli, tmp_path, fixtures):
    with Server(fixtures) as server:
        manifest = _manifest(tmp_path, server.url, fixtures)
        result = cli("corpus", "download", "gz", "--manifest", manifest,
                     "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 0, result.stderr
    assert (Path(result.stdout.strip()) / "one.txt").read_bytes() == b"gzipped text\n"


def test_checksum_mismatch_fails_and_leaves_nothing(cli, tmp_path, fixtures):
    with Server(fixtures) as server:
        manifest = _manifest(tmp_path, server.url, fixtures, plain={"sha256": "0" * 64})
        result = cli("corpus", "download", "plain", "--manifest", manifest,
                     "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "checksum mismatch" in result.stderr and "Traceback" not in result.stderr
    root = tmp_path / "cache" / "plain"
    assert not (root / "text").exists()
    assert not [p for p in (root / "downloads").iterdir()]  # the bad file was removed


def test_partial_download_resumes_with_a_range_request(cli, tmp_path, fixtures):
    data = (fixtures / "plain.txt").read_bytes()
    part = tmp_path / "cache" / "plain" / "downloads" / "plain.txt.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:1000])
    with Server(fixtures) as server:
        manifest = _manifest(tmp_path, server.url, fixtures)
        result = cli("corpus", "download", "plain", "--manifest", manifest,
                     "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 0, result.stderr
    assert server.requests == [("/plain.txt", "bytes=1000-")]
    assert (Path(result.stdout.strip()) / "train.txt").read_bytes() == data
    assert "resuming" in result.stderr
    assert not part.exists()


def test_server_without_range_support_restarts_from_zero(cli, tmp_path, fixtures):
    data = (fixtures / "plain.txt").read_bytes()
    part = tmp_path / "cache" / "plain" / "downloads" / "plain.txt.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"X" * 1000)  # garbage: appending to it would fail the checksum
    with Server(fixtures, ranges=False) as server:
        manifest = _manifest(tmp_path, server.url, fixtures)
        result = cli("corpus", "download", "plain", "--manifest", manifest,
                     "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 0, result.stderr
    assert server.requests == [("/plain.txt", "bytes=1000-")]  # asked, was refused
    assert (Path(result.stdout.strip()) / "train.txt").read_bytes() == data


def test_partial_file_longer_than_the_source_starts_again(cli, tmp_path, fixtures):
    data = (fixtures / "plain.txt").read_bytes()
    part = tmp_path / "cache" / "plain" / "downloads" / "plain.txt.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"X" * (len(data) + 10))  # the server answers 416 to this range
    with Server(fixtures) as server:
        manifest = _manifest(tmp_path, server.url, fixtures, plain={"size": None})
        result = cli("corpus", "download", "plain", "--manifest", manifest,
                     "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 0, result.stderr
    assert server.requests == [("/plain.txt", f"bytes={len(data) + 10}-"), ("/plain.txt", None)]
    assert (Path(result.stdout.strip()) / "train.txt").read_bytes() == data


SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare"


@pytest.mark.skipif(not (SHAKESPEARE / "input.txt").exists(), reason="no shared corpora here")
def test_shipped_tiny_shakespeare_entry_verifies_the_real_file(cli, tmp_path):
    """The manifest's size and sha256 match the real file (served locally, not fetched)."""
    from lmtool.corpora import default_manifest_path

    shipped = json.loads(default_manifest_path().read_text())
    entry = next(c for c in shipped["corpora"] if c["name"] == "tiny-shakespeare")
    www = tmp_path / "www"
    www.mkdir()
    shutil.copy(SHAKESPEARE / "input.txt", www / "input.txt")
    with Server(www) as server:
        entry["files"][0]["urls"] = [f"{server.url}/input.txt"]
        manifest = tmp_path / "m.json"
        manifest.write_text(json.dumps({"corpora": [entry]}))
        result = cli("corpus", "download", "tiny-shakespeare", "--manifest", manifest)
    assert result.exit_code == 0, result.stderr
    assert "unverified" not in result.stderr
    out = Path(result.stdout.strip())
    assert (out / "input.txt").stat().st_size == 1115394


def test_force_downloads_again(cli, tmp_path, fixtures):
    with Server(fixtures) as server:
        manifest = _manifest(tmp_path, server.url, fixtures)
        args = ("corpus", "download", "plain", "--manifest", manifest,
                "--cache-dir", tmp_path / "cache")
        assert cli(*args).exit_code == 0
        assert cli(*args, "--force").exit_code == 0
    assert [p for p, _ in server.requests] == ["/plain.txt", "/plain.txt"]


def test_unknown_name_exits_2_with_the_names(cli):
    result = cli("corpus", "download", "no-such-corpus")
    assert result.exit_code == 2
    assert "no-such-corpus" in result.stderr and "tiny-shakespeare" in result.stderr
    assert result.stdout == ""


def test_unreachable_server_is_one_line_exit_1(cli, tmp_path, fixtures):
    with socket.socket() as s:  # a port that was free a moment ago and is closed now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manifest = _manifest(tmp_path, f"http://127.0.0.1:{port}", fixtures)
    result = cli("corpus", "download", "plain", "--manifest", manifest,
                 "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmtool: error: cannot download")


def test_missing_member_is_an_error_not_an_empty_corpus(cli, tmp_path, fixtures):
    with Server(fixtures) as server:
        manifest = _manifest(tmp_path, server.url, fixtures, lm={"unpack": [
            {"members": "lm/test.tokens", "to": "test.txt"}]})
        result = cli("corpus", "download", "lm", "--manifest", manifest,
                     "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 1
    assert "lm/test.tokens" in result.stderr
    assert not (tmp_path / "cache" / "lm" / "text").exists()


def test_bad_manifest_is_bad_input(cli, tmp_path):
    bad = tmp_path / "m.json"
    bad.write_text(json.dumps({"corpora": [{"name": "x", "files": [
        {"urls": ["http://127.0.0.1/x"], "filename": "x", "format": "rar"}]}]}))
    result = cli("corpus", "list", "--manifest", bad)
    assert result.exit_code == 2
    assert "rar" in result.stderr
