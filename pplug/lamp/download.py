"""Fetch the official LaMP files from the benchmark's server.

    https://ciir.cs.umass.edu/downloads/LaMP/LaMP_4/train/train_questions.json      (user-based)
    https://ciir.cs.umass.edu/downloads/LaMP/time/LaMP_4/dev/dev_outputs.json       (time-based)

land in `lamp_data/LaMP_4/` (or `lamp_data/time/LaMP_4/`) under their own names, so `load_split`
reads them directly. The test split has no outputs. Every payload is parsed and shape-checked before
it is written (a wrong address can answer 200 with an HTML page), and written atomically, so a
failed or interrupted download never leaves a half file. Without a network the first request fails
after a short timeout with a message naming the URL.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from pplug.core.io import atomic_write_bytes
from pplug.core.tasks import get_task

from .data import LaMPDataError, parse_outputs, parse_questions

BASE_URL = "https://ciir.cs.umass.edu/downloads/LaMP"
SPLITS = ("train", "dev", "test")
# LaMP_2N is the older news release, no longer served. LaMP_6's served files hold only Avocado message
# ids (the emails need an LDC licence) and must be rebuilt with LaMP's data/avocado script.
DOWNLOADABLE = ("LaMP_1", "LaMP_2", "LaMP_3", "LaMP_4", "LaMP_5", "LaMP_7")
_NOT_SERVED = {
    "LaMP_2N": "the older news release of LaMP-2 is no longer served; LaMP_2 is the movie-tag release",
    "LaMP_6": "the LaMP site serves only Avocado message ids for LaMP_6; build the files with "
    "data/avocado/create_avocado_dataset.py of the LaMP repository (needs the LDC Avocado corpus) "
    "and put them in lamp_data/LaMP_6/",
}


class DownloadError(RuntimeError):
    """A download that failed; one line naming the URL."""


def file_urls(task: str, split: str, time_based: bool = False, base_url: str = BASE_URL) -> dict[str, str]:
    """{file name: URL} of one split (questions, plus outputs except for test)."""
    name = get_task(task).name
    if name not in DOWNLOADABLE:
        why = _NOT_SERVED.get(name, "not served by the LaMP site")
        raise ValueError(f"{name}: {why}; downloadable: {', '.join(DOWNLOADABLE)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    base = f"{base_url.rstrip('/')}/{'time/' if time_based else ''}{name}/{split}"
    kinds = ("questions",) if split == "test" else ("questions", "outputs")
    return {f"{split}_{k}.json": f"{base}/{split}_{k}.json" for k in kinds}


def target_dir(task: str, root: str | Path = "lamp_data", time_based: bool = False) -> Path:
    """`root/<task>` or `root/time/<task>`."""
    name = get_task(task).name
    return Path(root) / "time" / name if time_based else Path(root) / name


def fetch(url: str, timeout: float = 10.0, opener: Callable | None = None) -> bytes:
    """GET `url` and return the body; any failure is a one-line DownloadError naming the URL."""
    open_ = opener or urllib.request.urlopen
    req = urllib.request.Request(url, headers={"User-Agent": "pplug-download"})
    try:
        with open_(req, timeout=timeout) as resp:
            status = getattr(resp, "status", 200)
            if status != 200:
                raise DownloadError(f"{url}: HTTP {status}")
            return resp.read()
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        reason = e.reason if not isinstance(e.reason, BaseException) else (str(e.reason) or type(e.reason).__name__)
        raise DownloadError(f"{url}: cannot reach the server ({reason}); no network? The files can also be "
                            f"downloaded by hand into lamp_data/ (see lamp_data/README.md)") from None
    except (socket.timeout, TimeoutError):
        raise DownloadError(f"{url}: timed out after {timeout:g}s; no network?") from None
    except OSError as e:
        raise DownloadError(f"{url}: {e}") from None


def check_payload(data: bytes, name: str, url: str, task: str) -> None:
    """Raise DownloadError unless `data` is the LaMP JSON that `name` should hold (catches HTML error pages)."""
    head = data[:512].lstrip().lower()
    if head.startswith(b"<"):  # <!doctype html>, <html>, <?xml ...: an error page, not a LaMP file
        raise DownloadError(f"{url}: got an HTML page, not JSON (wrong address or the file moved)")
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DownloadError(f"{url}: not JSON ({e})") from None
    spec = get_task(task)
    try:
        if "_questions" in name:
            parse_questions(obj, Path(name), spec)
        else:
            file_task, _ = parse_outputs(obj, Path(name))
            if file_task != spec.name:
                raise DownloadError(f"{url}: outputs are for task {file_task}, expected {spec.name}")
    except LaMPDataError as e:
        raise DownloadError(f"{url}: not a valid LaMP file: {e}") from None


def download(
    task: str,
    splits: tuple[str, ...] | list[str] = ("train", "dev"),
    root: str | Path = "lamp_data",
    time_based: bool = False,
    base_url: str = BASE_URL,
    timeout: float = 10.0,
    overwrite: bool = False,
    opener: Callable | None = None,
    log: Callable[[str], None] | None = print,
) -> list[Path]:
    """Download and validate the official files of `task` into `root/<task>` (or `root/time/<task>`).

    Every file of every split is fetched and checked before the first one is written, so a failure
    leaves the folder as it was. Existing files are kept unless `overwrite`.

    Returns:
        The paths of the files now in place.
    """
    name = get_task(task).name
    out = target_dir(name, root, time_based)
    plan = {}
    for split in splits:
        plan.update(file_urls(name, split, time_based, base_url))
    fetched: dict[str, bytes] = {}
    for fname, url in plan.items():
        if (out / fname).is_file() and not overwrite:
            if log:
                log(f"keep {out / fname} (exists)")
            continue
        if log:
            log(f"get  {url}")
        data = fetch(url, timeout=timeout, opener=opener)
        check_payload(data, fname, url, name)
        fetched[fname] = data
    for fname, data in fetched.items():
        atomic_write_bytes(out / fname, data)
        if log:
            log(f"wrote {out / fname} ({len(data) / 1e6:.1f} MB)")
    return [out / f for f in plan]
