"""Download stage: photos from an IMDb-Face CSV or an ``identity,url`` CSV, robustly.

* Inputs: IMDb-Face's CSV (columns ``name,index,image,rect,height,width,url``; the identity is
  ``index``, the IMDb id) or a plain CSV with ``identity,url`` (optional ``image``).
* Sampling as the paper: ``identities`` identities with at least ``min_images`` URLs, at most
  ``max_images`` URLs each, drawn with the seed (0 = every identity, every URL).
* Safety: identity and file names are reduced to ``[A-Za-z0-9._-]`` after Unicode NFKC
  normalisation (no separators, no leading dots, at most 100 characters); a name the reduction
  changed gets ``-`` and 8 hex digits of the original's sha1, so different names stay different
  people (``Zoë`` and ``Zoé``, ``a/b`` and ``a_b``), and the table keeps the original
  (``source_identity``). Every target path is checked to lie inside the raw folder.
* Robustness: bounded concurrency; connect/read timeouts and a total deadline per attempt (a slow
  drip cannot hang a worker); retries with exponential backoff for 5xx, 429, timeouts and
  connection errors (not for other 4xx); at most ``max_redirects`` redirects; a size cap checked
  while streaming; content sniffing (HTML, XML, JSON or text is not an image) and a full decode
  (:func:`leam.core.images.load_rgb`) before anything is kept; writes go to a temporary file renamed into
  place, so a partial file is never left.
* Resumable: a file already present that decodes is recorded as ``ok`` (``cached``) without a
  request; one that does not is replaced only by a download that decodes (never deleted first).
  The same URL listed twice for an identity is fetched once (``duplicate-url``).

Every URL gets a row in the downloads table: identity, image, url, status (``ok`` / ``failed`` /
``skipped``), reason, http_status, bytes, sha256, attempts, seconds; a CSV row without an identity
or a URL too (``skipped``, ``no-identity`` / ``no-url``, with its line).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import random
import re
import tempfile
import threading
import time
import unicodedata
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import requests
import urllib3

from leam.core.images import ImageRejected, load_rgb
from leam.core.io import write_parquet, write_text
from leam.core.tables import DOWNLOADS_SCHEMA
from leam.options import DownloadOptions

__all__ = [
    "safe_name",
    "read_url_list",
    "sample_urls",
    "DownloadConfig",
    "download_all",
    "download_list",
    "run",
]

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_IMAGE_EXT = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp")


def safe_name(name: str, *, fallback_seed: str = "") -> str:
    """A file-system-safe single path component for ``name`` (see module docstring): ``name``
    itself when it is safe, else its reduction plus ``-`` and 8 hex digits of its sha1."""
    name = str(name)
    s = _UNSAFE.sub("_", unicodedata.normalize("NFKC", name)).strip("._-")[:100]
    if not s or s in (".", ".."):
        return "x" + hashlib.sha1((fallback_seed or name).encode("utf-8", "surrogatepass")).hexdigest()[:12]
    if s != name:
        s += "-" + hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return s


@dataclass(frozen=True)
class UrlEntry:
    identity: str  # safe
    image: str  # safe file name
    url: str
    source_identity: str


def read_url_list(path: str | Path, skipped: list | None = None) -> list[UrlEntry]:
    """IMDb-Face CSV or ``identity,url[,image]`` CSV -> entries with safe identity and image names.

    ``skipped``: a list that receives an :class:`Outcome` for every row without an identity or a
    URL. Two different identities whose safe names coincide raise ValueError (it cannot happen by
    :func:`safe_name`'s hash unless the list is built to make it).
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = set(reader.fieldnames or [])
        if {"index", "url"} <= cols:
            key, img = "index", "image"
        elif {"identity", "url"} <= cols:
            key, img = "identity", "image"
        else:
            raise ValueError(
                f"{path}: expected IMDb-Face columns (name,index,image,...,url) or identity,url; got {sorted(cols)}"
            )
        out = []
        names: dict[str, str] = {}
        for line, row in enumerate(reader, 2):
            url = (row.get("url") or "").strip()
            ident = (row.get(key) or "").strip()
            if not url or not ident:
                if skipped is not None:
                    why = "no-identity" if not ident else "no-url"
                    skipped.append(
                        Outcome(
                            safe_name(ident) if ident else "",
                            "",
                            url,
                            ident,
                            status="skipped",
                            reason=f"{why}: {path.name} line {line} has no {key if not ident else 'url'}",
                        )
                    )
                continue
            safe = safe_name(ident)
            if names.setdefault(safe, ident) != ident:
                raise ValueError(
                    f"{path} line {line}: identities {names[safe]!r} and {ident!r} would share the folder "
                    f"{safe!r}; rename one"
                )
            raw_img = (row.get(img) or "").strip() or Path(urlparse(url).path).name
            stem, ext = os.path.splitext(raw_img)
            ext = ext.lower() if ext.lower() in _IMAGE_EXT else ".jpg"
            image = safe_name(stem, fallback_seed=url) + ext
            out.append(UrlEntry(safe, image, url, ident))
    return out


def sample_urls(
    entries: list[UrlEntry], *, identities: int, min_images: int, max_images: int, seed: int
) -> list[UrlEntry]:
    """The paper's sample: identities with >= min_images URLs, <= max_images each, seeded."""
    by_id: dict[str, list[UrlEntry]] = {}
    for e in entries:
        by_id.setdefault(e.identity, []).append(e)
    eligible = sorted(i for i, es in by_id.items() if len(es) >= min_images)
    rng = np.random.default_rng(seed)
    chosen = (
        eligible
        if not identities or identities >= len(eligible)
        else sorted(rng.choice(eligible, size=identities, replace=False).tolist())
    )
    out = []
    for ident in chosen:
        es = by_id[ident]
        if max_images and len(es) > max_images:
            idx = sorted(rng.choice(len(es), size=max_images, replace=False).tolist())
            es = [es[i] for i in idx]
        out.extend(es)
    return out


@dataclass(frozen=True)
class DownloadConfig:
    """How URLs are fetched: the config's ``download`` keys (:meth:`from_options`; no defaults here:
    the schema holds them) and the transport's own constants."""

    concurrency: int
    connect_timeout: float
    read_timeout: float
    deadline: float  # seconds per attempt, whole body included
    retries: int
    max_bytes: int
    backoff: float = 1.0  # seconds, doubled per retry, with jitter
    max_redirects: int = 5
    user_agent: str = "leam/0.1 (face-recognition explainability research)"

    @classmethod
    def from_options(cls, o: DownloadOptions, **transport) -> DownloadConfig:
        """From the stage's options; ``transport``: ``backoff``, ``max_redirects``, ``user_agent``."""
        return cls(
            concurrency=o.concurrency,
            connect_timeout=o.connect_timeout,
            read_timeout=o.read_timeout,
            deadline=o.deadline,
            retries=o.retries,
            max_bytes=int(o.max_mb * 2**20),
            **transport,
        )


@dataclass
class Outcome:
    identity: str
    image: str
    url: str
    source_identity: str
    status: str = "failed"
    reason: str = ""
    http_status: int | None = None
    bytes: int = 0
    sha256: str = ""
    attempts: int = 0
    seconds: float = 0.0


class _Fatal(Exception):
    """Not worth retrying."""


class _Retry(Exception):
    """Transient: retry with backoff."""


_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")


def sniff(head: bytes) -> str | None:
    """None if ``head`` starts like an image, else why not."""
    if head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return None
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text[:512]:
        return "not-an-image: HTML page"
    if text.startswith((b"<?xml", b"{", b"[")):
        return "not-an-image: XML/JSON"
    return "not-an-image: unknown format"


def _target(raw_dir: Path, e: UrlEntry) -> Path:
    target = (raw_dir / e.identity / e.image).resolve()
    root = raw_dir.resolve()
    if root not in target.parents:
        raise _Fatal(f"unsafe-path: {target} is outside {root}")
    return target


def _body(r: requests.Response, cfg: DownloadConfig, start: float, out: Outcome) -> bytes:
    """The response's body, refused by status (429 and 5xx: retried), size or the attempt's deadline."""
    out.http_status = r.status_code
    if r.status_code in (429,) or r.status_code >= 500:
        raise _Retry(f"http-{r.status_code}")
    if r.status_code >= 400:
        raise _Fatal(f"http-{r.status_code}")
    length = r.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > cfg.max_bytes:
        raise _Fatal(f"too-large: Content-Length {length} > {cfg.max_bytes}")
    chunks, size = [], 0
    # read1 returns what has arrived (each wait bounded by the read timeout), so a slow drip meets
    # the deadline check instead of blocking until a full chunk arrives
    while chunk := r.raw.read1(65536, decode_content=True):
        size += len(chunk)
        if size > cfg.max_bytes:
            raise _Fatal(f"too-large: more than {cfg.max_bytes} bytes")
        if time.monotonic() - start > cfg.deadline:
            raise _Retry(f"timeout: body not complete after {cfg.deadline:g} s")
        chunks.append(chunk)
    return b"".join(chunks)


def _attempt(session: requests.Session, e: UrlEntry, cfg: DownloadConfig, target: Path, out: Outcome) -> None:
    start = time.monotonic()
    try:
        with session.get(e.url, stream=True, timeout=(cfg.connect_timeout, cfg.read_timeout)) as r:
            data = _body(r, cfg, start, out)
    except requests.exceptions.TooManyRedirects:
        raise _Fatal(f"redirect-loop: more than {cfg.max_redirects} redirects") from None
    except (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError) as err:
        raise _Retry(f"timeout: {type(err).__name__}") from None
    except (
        requests.exceptions.ConnectionError,
        requests.exceptions.ChunkedEncodingError,
        urllib3.exceptions.HTTPError,
    ) as err:
        if "IncompleteRead" in repr(err):
            raise _Retry("truncated: the connection closed before the announced length") from None
        raise _Retry(f"connection-error: {type(err).__name__}") from None
    if not data:
        raise _Fatal("empty-file: 0 bytes")
    if why := sniff(data[:1024]):
        raise _Fatal(why)
    _keep_if_decodable(data, target)
    out.bytes, out.sha256 = len(data), hashlib.sha256(data).hexdigest()


def _keep_if_decodable(data: bytes, target: Path) -> None:
    """Write ``data`` to ``target`` (atomically) only if it decodes as a photo: a failed download
    never replaces a file that was there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            load_rgb(tmp)
        except ImageRejected as err:
            raise _Fatal(err.reason + (f": {err.detail}" if err.detail else "")) from None
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fetch(session: requests.Session, e: UrlEntry, cfg: DownloadConfig, raw_dir: Path, seed: int) -> Outcome:
    out = Outcome(e.identity, e.image, e.url, e.source_identity)
    t0 = time.monotonic()
    try:
        target = _target(raw_dir, e)
        kept = ""
        if target.exists():
            try:
                load_rgb(target)
                data = target.read_bytes()
                out.status, out.reason = "ok", "cached"
                out.bytes, out.sha256 = len(data), hashlib.sha256(data).hexdigest()
                return out
            except ImageRejected as err:  # fetch again; only a good download replaces it
                kept = f" (the undecodable file already at {target} is kept: {err.reason})"
        rng = random.Random(f"{seed}/{e.url}")
        for attempt in range(1, cfg.retries + 2):
            out.attempts = attempt
            try:
                _attempt(session, e, cfg, target, out)
                out.status, out.reason = "ok", ""
                return out
            except _Retry as err:
                out.reason = str(err) + kept
                if attempt <= cfg.retries:
                    time.sleep(cfg.backoff * 2 ** (attempt - 1) * (0.5 + rng.random()))
        return out  # retries exhausted: status failed, the last reason
    except _Fatal as err:
        out.reason = str(err) + kept
        return out
    except Exception as err:  # noqa: BLE001 - a bad URL must cost one row, not the run
        out.reason = f"error: {type(err).__name__}: {err}"
        return out
    finally:
        out.seconds = time.monotonic() - t0


def download_all(
    entries: list[UrlEntry],
    raw_dir: str | Path,
    table_out: str | Path,
    *,
    cfg: DownloadConfig,
    seed: int,
    manifest: str | Path | None = None,
    skipped: Sequence[Outcome] = (),
) -> pa.Table:
    """Download every entry into ``raw_dir/{identity}/{image}``; write the downloads table (with
    the ``skipped`` rows of the URL list too)."""
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    seen: dict[tuple[str, str], UrlEntry] = {}
    jobs, dups = [], []
    used: set[tuple[str, str]] = set()
    for e in entries:
        if (e.identity, e.url) in seen:
            dups.append(e)
            continue
        seen[(e.identity, e.url)] = e
        image, k = e.image, 1
        while (e.identity, image) in used:  # two URLs with the same file name: keep both
            stem, ext = os.path.splitext(e.image)
            image, k = f"{stem}-{k}{ext}", k + 1
        used.add((e.identity, image))
        jobs.append(UrlEntry(e.identity, image, e.url, e.source_identity))
    local = threading.local()

    def session() -> requests.Session:
        if not hasattr(local, "s"):
            s = requests.Session()
            s.max_redirects = cfg.max_redirects
            s.headers["User-Agent"] = cfg.user_agent
            local.s = s
        return local.s

    done = 0
    lock = threading.Lock()

    def run(e):
        nonlocal done
        o = _fetch(session(), e, cfg, raw_dir, seed)
        with lock:
            done += 1
            if done % 50 == 0 or done == len(jobs):
                log.info("downloaded %d/%d", done, len(jobs))
        return o

    with ThreadPoolExecutor(max_workers=cfg.concurrency) as pool:
        outcomes = list(pool.map(run, jobs))
    outcomes += [
        Outcome(e.identity, e.image, e.url, e.source_identity, status="skipped", reason="duplicate-url") for e in dups
    ] + list(skipped)
    outcomes.sort(key=lambda o: (o.identity, o.image, o.url))
    table = pa.Table.from_pylist([asdict(o) for o in outcomes], schema=DOWNLOADS_SCHEMA)
    write_parquet(table, table_out)
    counts: dict[str, int] = {}
    for o in outcomes:
        key = o.status if o.status != "failed" else "failed: " + o.reason.split(":")[0]
        counts[key] = counts.get(key, 0) + 1
    log.info("downloads: %s", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if manifest:
        write_text("".join(f"{o.sha256}  {o.identity}/{o.image}\n" for o in outcomes if o.status == "ok"), manifest)
    return table


def run(*, inputs, outputs, options: DownloadOptions) -> pa.Table:
    """The workflow's entry point (checkpoint ``download``): ``inputs.urls`` (the URL list) in;
    the photos into the folder of ``outputs.manifest`` (their sha256), ``outputs.table`` out."""
    return download_list(inputs.urls, Path(outputs.manifest).parent, outputs.table, outputs.manifest, options=options)


def download_list(
    urls_csv: str | Path, raw_dir: str | Path, table_out: str | Path, manifest: str | Path, *, options: DownloadOptions
) -> pa.Table:
    """Download stage: read, sample (config ``download``) and fetch a URL list into ``raw_dir``."""
    skipped: list[Outcome] = []
    entries = read_url_list(urls_csv, skipped)
    chosen = sample_urls(
        entries,
        identities=options.identities,
        min_images=options.min_images,
        max_images=options.max_images,
        seed=options.seed,
    )
    log.info(
        "%s: %d URLs of %d identities; sampled %d URLs of %d identities",
        urls_csv,
        len(entries),
        len({e.identity for e in entries}),
        len(chosen),
        len({e.identity for e in chosen}),
    )
    cfg = DownloadConfig.from_options(options)
    return download_all(chosen, raw_dir, table_out, cfg=cfg, seed=options.seed, manifest=manifest, skipped=skipped)
