"""``llmsim data pull`` against a local HTTP server on 127.0.0.1 serving the real data.

The server supports ``Range`` requests and can be told to truncate the first response or
corrupt the bytes of a file, so resume and checksum verification are exercised for real.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from llmsim.data.catalog import load_catalog
from llmsim.data.download import DownloadError, FileState, pull_dataset, pull_file, verify_dataset

DATASET = "azure-llm-2023"


class _Behaviour:
    def __init__(self) -> None:
        self.truncate_first: set[str] = set()  # url paths whose first response is cut short
        self.truncate_always: set[str] = set()
        self.corrupt: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []


def make_handler(root: Path, behaviour: _Behaviour) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            rel = self.path.lstrip("/")
            behaviour.requests.append((rel, self.headers.get("Range")))
            target = (root / rel).resolve()
            if root.resolve() not in target.parents or not target.is_file():
                self.send_error(404)
                return
            data = target.read_bytes()
            if rel in behaviour.corrupt:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            start = 0
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes="):
                start = int(rng[6:].split("-")[0])
                if start >= len(data):
                    self.send_error(416)
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            cut = rel in behaviour.truncate_always or (rel in behaviour.truncate_first and not rng)
            self.wfile.write(body[: len(body) // 3] if cut else body)
            if cut:
                self.close_connection = True

    return Handler


@pytest.fixture
def server(data_path) -> Iterator[tuple[str, _Behaviour]]:
    root = data_path(DATASET).parent
    behaviour = _Behaviour()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make_handler(root, behaviour))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", behaviour
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def dataset_from(base_url: str):
    return load_catalog().dataset(DATASET).with_mirror(base_url)


def test_pull_downloads_and_verifies(server, tmp_path):
    base, behaviour = server
    ds = dataset_from(base)
    paths = pull_dataset(ds, tmp_path, timeout_s=5)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [f.path for f in ds.files]
    assert {c.state for c in verify_dataset(ds, tmp_path)} == {FileState.OK}
    n = len(behaviour.requests)
    pull_dataset(ds, tmp_path, timeout_s=5)  # already verified: no new request
    assert len(behaviour.requests) == n


def test_truncated_response_is_resumed_with_range(server, tmp_path):
    base, behaviour = server
    file = dataset_from(base).files[0]
    behaviour.truncate_first.add(file.path)
    dest = pull_file(file, tmp_path, timeout_s=5)
    ranges = [r for p, r in behaviour.requests if p == file.path]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
    assert int(ranges[1][6:-1]) > 0
    assert verify_dataset(replace(dataset_from(base), files=(file,)), tmp_path)[0].state is FileState.OK
    assert dest.stat().st_size == file.size_bytes


def test_truncation_beyond_retries_is_never_used(server, tmp_path):
    base, behaviour = server
    file = dataset_from(base).files[0]
    behaviour.truncate_always.add(file.path)
    # Every response stops after a third of what it announces; 1 retry cannot finish the file.
    with pytest.raises(DownloadError, match="truncated"):
        pull_file(file, tmp_path, retries=1, timeout_s=5)
    assert not (tmp_path / file.path).exists()
    assert not list((tmp_path / file.path).parent.glob("*.partial"))


def test_corrupt_download_detected_and_deleted(server, tmp_path):
    base, behaviour = server
    file = dataset_from(base).files[1]
    behaviour.corrupt.add(file.path)
    with pytest.raises(DownloadError, match="sha256"):
        pull_file(file, tmp_path, timeout_s=5)
    assert not (tmp_path / file.path).exists()
    assert not list((tmp_path / file.path).parent.glob("*"))


def test_verify_flags_tampered_local_copy(server, tmp_path):
    base, _ = server
    ds = dataset_from(base)
    pull_dataset(ds, tmp_path, timeout_s=5)
    victim = tmp_path / ds.files[0].path
    data = bytearray(victim.read_bytes())
    data[10] ^= 1
    victim.write_bytes(bytes(data))
    (tmp_path / ds.files[1].path).unlink()
    states = [c.state for c in verify_dataset(ds, tmp_path)]
    assert states == [FileState.CHECKSUM_MISMATCH, FileState.MISSING]
    pull_dataset(ds, tmp_path, timeout_s=5)  # pull repairs both
    assert {c.state for c in verify_dataset(ds, tmp_path)} == {FileState.OK}


def test_missing_url_is_a_download_error(server, tmp_path):
    base, _ = server
    file = replace(dataset_from(base).files[0], url=f"{base}/nope.csv")
    with pytest.raises(DownloadError, match="HTTP 404"):
        pull_file(file, tmp_path, timeout_s=5)


def test_catalog_checksums_match_local_mirror(data_path):
    """Every catalog file with a checksum that is present in the data dir matches it."""
    cat = load_catalog()
    root = data_path(DATASET).parent
    checked = 0
    for ds in cat.datasets.values():
        for c in verify_dataset(ds, root):
            if c.state is not FileState.MISSING and c.file.sha256 is not None:
                assert c.state is FileState.OK, c
                checked += 1
    assert checked >= 90


class _FakeResponse:
    """A minimal urllib response: status, headers and a body read in chunks."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status, self.headers, self._body = status, headers, body

    def read(self, n: int) -> bytes:
        out, self._body = self._body[:n], self._body[n:]
        return out

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def test_resume_with_wrong_content_range_is_refused(tmp_path):
    """A 206 that does not start where the partial file ends must never be appended
    (for a file without a checksum nothing else would catch the splice)."""
    import hashlib

    from llmsim.data.catalog import DataFile

    data = bytes(range(256)) * 4
    unchecked = DataFile(path="x/f.bin", url="http://127.0.0.1:1/f.bin")
    partial = tmp_path / "x" / "f.bin.partial"
    partial.parent.mkdir()
    partial.write_bytes(data[:100])

    def opener(request, timeout_s):
        assert request.get_header("Range") == "bytes=100-"
        return _FakeResponse(206, data, {"Content-Length": str(len(data)),
                                         "Content-Range": f"bytes 0-{len(data) - 1}/{len(data)}"})

    with pytest.raises(DownloadError, match="Content-Range"):
        pull_file(unchecked, tmp_path, opener=opener)
    assert not partial.exists() and not (tmp_path / "x" / "f.bin").exists()

    # A correct range is appended and accepted.
    partial.write_bytes(data[:100])
    good = replace(unchecked, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())

    def good_opener(request, timeout_s):
        return _FakeResponse(206, data[100:], {"Content-Length": str(len(data) - 100),
                                               "Content-Range": f"bytes 100-{len(data) - 1}/{len(data)}"})

    assert pull_file(good, tmp_path, opener=good_opener).read_bytes() == data
