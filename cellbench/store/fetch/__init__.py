"""Fetch dataset source files reliably, verify their sha256, and cache them.

A dataset card lists its sources; each entry becomes a :class:`Source` (with
:meth:`Source.from_card`) and :func:`fetch` turns it into a verified local file::

    sources:
      - name: images                      # descriptive keys: name, description, license,
        license: CC0-1.0                  #   homepage, citation, notes (not used to fetch)
        urls:                             # mirrors, tried in order (or `url:` for one)
          - https://zenodo.org/records/123/files/images.zip?download=1
          - s3://open-bucket/bbbc039/images.zip
        sha256: 0f3c...                   # of the downloaded file (64 hex digits)
        size: 73400320                    # optional, bytes
        storage_options: {anon: true}     # optional, for fsspec mirrors
      - url: https://example.org/bundle.tar.gz
        sha256: 5d2e...
        member: bundle/labels/t001.tif    # extract this file from the archive
        member_sha256: 77aa...            # required with `member`
        filename: labels_t001.tif         # optional name of the returned file
      - url: pypi://scikit-image==0.24.0/skimage/data/cells3d.tif
        member_sha256: 9a1b...            # pypi: the member is what is verified

Mirror kinds: ``https://``/``http://`` (resumable with Range requests), any fsspec URL
(``s3://``, ``gs://``, ``hf://``, ``memory://``, ``file://``; per-source
``storage_options``), ``pypi://NAME==VERSION/path/in/distribution`` (``pip download``; pip's
index configuration applies), and local paths (verified, then used in place).

Cache layout (under :func:`cellbench.store.cache.downloads_dir`)::

    <sha256[:2]>/<sha256>/<name>             verified file (sha256 of that file)
    <sha256[:2]>/<sha256>/<name>.part        partial download, resumed by the next fetch
    <sha256[:2]>/<sha256>/.<name>.lock       flock lock file (serialises concurrent fetches)
    <sha256[:2]>/<sha256>/.<name>.verified   stamp: size/mtime/inode when it was verified

An extracted member is cached under its own ``member_sha256``; its archive (when it has a
``sha256``) under the archive's. Offline, a file can be provided by copying it to the path
that :func:`cached_path` names: it is hashed on first use and deleted if it does not match.

**Why cellbench keeps its own fetcher** rather than pooch: a dropped connection must cost only
the missing bytes, and a file must come from the next mirror when one fails. Measured (a 20 MB
file served on 127.0.0.1 whose first response is cut after 10 MB): :func:`fetch` finished in one
call with a Range request for the last 10 MB (20 MB transferred); pooch 1.9.0's ``retrieve``
raised ``ChunkedEncodingError``, and the second call started again from byte 0 (30 MB
transferred, two calls). pooch also has no mirror list per file and no verified member of a
wheel on the package index (``pypi://``). Locks come from the ``filelock`` package and
filesystem URLs from fsspec; only the resuming, mirror and verification logic is cellbench's.
"""

from __future__ import annotations

from cellbench.store.fetch._files import sha256_file
from cellbench.store.fetch.core import cached_path, fetch
from cellbench.store.fetch.source import Source

__all__ = ["Source", "cached_path", "fetch", "sha256_file"]
