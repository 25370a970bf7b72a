"""Downloading official files, against a local HTTP server (no real network)."""

from __future__ import annotations

import functools
import http.server
import json
import socket
import threading
import time

import pytest

from pplug.cli.main import main
from pplug.lamp.data import load_split
from pplug.lamp.download import DownloadError, download, file_urls, target_dir

Q = [{"id": "310", "input": "What is the score ... review: fine", "profile": [{"id": "1", "text": "ok", "score": "4"}]}]
O = {"task": "LaMP_3", "golds": [{"id": "310", "output": "4"}]}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the request log out of the captured stderr
        pass


@pytest.fixture()
def server(tmp_path):
    """Serves tmp_path/www at http://127.0.0.1:<port>/ ; yields (base_url_of_LaMP, www dir)."""
    www = tmp_path / "www"
    for prefix in ("LaMP/LaMP_3", "LaMP/time/LaMP_3"):
        for split in ("train", "dev"):
            d = www / prefix / split
            d.mkdir(parents=True)
            (d / f"{split}_questions.json").write_text(json.dumps(Q))
            (d / f"{split}_outputs.json").write_text(json.dumps(O))
        (www / prefix / "test").mkdir()
        (www / prefix / "test" / "test_questions.json").write_text(json.dumps(Q))
    handler = functools.partial(_QuietHandler, directory=str(www))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/LaMP", www
    httpd.shutdown()
    httpd.server_close()


def test_urls_follow_the_official_layout():
    urls = file_urls("lamp-4", "dev", time_based=True)
    assert urls == {
        "dev_questions.json": "https://ciir.cs.umass.edu/downloads/LaMP/time/LaMP_4/dev/dev_questions.json",
        "dev_outputs.json": "https://ciir.cs.umass.edu/downloads/LaMP/time/LaMP_4/dev/dev_outputs.json",
    }
    assert list(file_urls("LaMP_4", "test")) == ["test_questions.json"]  # the test split has no outputs
    assert str(target_dir("LaMP_4", "lamp_data", time_based=True)) == "lamp_data/time/LaMP_4"
    with pytest.raises(ValueError, match="no longer served"):
        file_urls("LaMP_2N", "dev")
    with pytest.raises(ValueError, match="avocado"):
        file_urls("LaMP_6", "dev")


def test_download_writes_loadable_files(server, tmp_path):
    base, _ = server
    root = tmp_path / "lamp_data"
    paths = download("LaMP_3", ("train", "dev", "test"), root=root, base_url=base, log=None)
    assert [p.name for p in paths] == ["train_questions.json", "train_outputs.json", "dev_questions.json",
                                       "dev_outputs.json", "test_questions.json"]  # fmt: skip
    assert load_split(root / "LaMP_3", "dev").golds() == {"310": "4"}
    assert load_split(root / "LaMP_3", "test", task="LaMP_3")[0].output is None
    download("LaMP_3", ("dev",), root=root, base_url=base, time_based=True, log=None)
    assert (root / "time" / "LaMP_3" / "dev_outputs.json").is_file()


def test_html_page_with_200_is_rejected_and_nothing_written(server, tmp_path):
    base, www = server
    (www / "LaMP/LaMP_3/dev/dev_outputs.json").write_text("<!DOCTYPE html><html><body>Not here</body></html>")
    root = tmp_path / "lamp_data"
    with pytest.raises(DownloadError, match=r"dev_outputs\.json: got an HTML page"):
        download("LaMP_3", ("dev",), root=root, base_url=base, log=None)
    assert not (root / "LaMP_3").exists() or not any((root / "LaMP_3").iterdir())


def test_wrong_shape_and_wrong_task_rejected(server, tmp_path):
    base, www = server
    (www / "LaMP/LaMP_3/dev/dev_questions.json").write_text(json.dumps({"oops": 1}))
    with pytest.raises(DownloadError, match="not a valid LaMP file"):
        download("LaMP_3", ("dev",), root=tmp_path, base_url=base, log=None)
    (www / "LaMP/LaMP_3/dev/dev_questions.json").write_text(json.dumps(Q))
    (www / "LaMP/LaMP_3/dev/dev_outputs.json").write_text(json.dumps({**O, "task": "LaMP_4"}))
    with pytest.raises(DownloadError, match="outputs are for task LaMP_4"):
        download("LaMP_3", ("dev",), root=tmp_path, base_url=base, log=None)
    assert not (tmp_path / "LaMP_3").exists()


def test_404_names_url(server, tmp_path):
    base, _ = server
    with pytest.raises(DownloadError) as e:
        download("LaMP_5", ("dev",), root=tmp_path, base_url=base, log=None)
    assert f"{base}/LaMP_5/dev/dev_questions.json: HTTP 404" in str(e.value)


def test_no_network_fails_fast_naming_url(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}/LaMP"
    t0 = time.perf_counter()
    with pytest.raises(DownloadError) as e:
        download("LaMP_3", ("dev",), root=tmp_path, base_url=base, timeout=2, log=None)
    assert time.perf_counter() - t0 < 5
    assert f"{base}/LaMP_3/dev/dev_questions.json: cannot reach the server" in str(e.value)


def test_timeout_is_short_and_clear(tmp_path):
    def hanging_opener(req, timeout):
        raise TimeoutError("timed out")

    with pytest.raises(DownloadError, match=r"dev_questions\.json: timed out after 0\.5s"):
        download("LaMP_3", ("dev",), root=tmp_path, timeout=0.5, opener=hanging_opener, log=None)


def test_existing_files_kept_unless_overwrite(server, tmp_path):
    base, _ = server
    target = tmp_path / "LaMP_3"
    target.mkdir()
    (target / "dev_questions.json").write_text(json.dumps(Q))
    calls = []

    def counting(req, timeout):
        calls.append(req.full_url)
        import urllib.request

        return urllib.request.urlopen(req, timeout=timeout)

    download("LaMP_3", ("dev",), root=tmp_path, base_url=base, opener=counting, log=None)
    assert calls == [f"{base}/LaMP_3/dev/dev_outputs.json"]


def test_cli_download(server, tmp_path, capsys):
    base, www = server
    rc = main(["download", "LaMP_3", "--split", "dev", "--root", str(tmp_path), "--base-url", base])
    assert rc == 0 and (tmp_path / "LaMP_3" / "dev_questions.json").is_file()
    rc = main(["download", "LaMP_4", "--split", "dev", "--root", str(tmp_path), "--base-url", base])
    err = capsys.readouterr().err
    assert rc == 2 and "LaMP_4/dev/dev_questions.json: HTTP 404" in err and err.count("\n") == 1
