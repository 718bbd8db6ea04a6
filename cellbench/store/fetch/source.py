"""The :class:`Source` record: one file a dataset card needs, with its mirrors and checksums."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from cellbench.errors import CardError

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# PEP 508 project name, and a permissive PEP 440 version (pip validates it for real).
_PYPI_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
_PYPI_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+!_-]*$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")

#: Card keys that describe a source for humans and are accepted but not used for fetching.
INFO_KEYS = frozenset({"name", "description", "license", "homepage", "citation", "notes"})
#: Card keys that :meth:`Source.from_card` reads.
FETCH_KEYS = frozenset(
    {"url", "urls", "sha256", "filename", "member", "member_sha256", "size", "storage_options"}
)
# fsspec protocols that never leave this machine, so they also work offline.
# Wrappers (caches, archives) only reach the network through the URL they wrap.
_LOCAL_PROTOCOLS = frozenset(
    {"file", "local", "memory", "simplecache", "filecache", "blockcache", "zip", "tar"}
)
_CHAINED = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*(://[^:]*)?::")


class _InvalidSourceError(CardError):
    """A :class:`Source` built with invalid fields; carries the problems for re-labelling."""

    def __init__(self, problems: list[str], label: str) -> None:
        self.problems = problems
        super().__init__(f"invalid source {label}: " + "; ".join(problems))


class UrlKind(Enum):
    """How a mirror is fetched."""

    HTTP = "http"  # http:// and https://, resumable with Range requests
    FSSPEC = "fsspec"  # any other protocol fsspec knows (s3, gs, hf, memory, file, ...)
    PYPI = "pypi"  # pypi://NAME==VERSION/member, via `pip download`
    LOCAL = "local"  # a path on this machine, verified and used in place


def url_kind(url: str) -> UrlKind:
    """Classify a mirror string (no validation beyond the scheme).

    Args:
        url: A mirror as written in a card.

    Returns:
        The :class:`UrlKind`; strings without ``scheme://`` are local paths, and fsspec
        chained URLs (``zip://a.tif::s3://bucket/b.zip``, ``simplecache::s3://...``) are
        :attr:`UrlKind.FSSPEC`.
    """
    if _CHAINED.match(url):
        return UrlKind.FSSPEC
    match = _SCHEME.match(url)
    if match is None:
        return UrlKind.LOCAL
    scheme = match.group(1).lower()
    if scheme in ("http", "https"):
        return UrlKind.HTTP
    if scheme == "pypi":
        return UrlKind.PYPI
    return UrlKind.FSSPEC


def needs_network(url: str) -> bool:
    """Return True if fetching ``url`` would use the network (forbidden offline)."""
    kind = url_kind(url)
    if kind is UrlKind.LOCAL:
        return False
    if kind is UrlKind.FSSPEC:
        return any(p not in _LOCAL_PROTOCOLS for p in fsspec_protocols(url))
    return True


def fsspec_protocols(url: str) -> list[str]:
    """Protocols of an fsspec URL, outermost first (several for chained URLs)."""
    return [segment.split("://", 1)[0].lower() for segment in url.split("::")]


def parse_pypi_url(url: str) -> tuple[str, str, str | None]:
    """Split ``pypi://NAME==VERSION[/member/path]`` into its parts.

    Args:
        url: A ``pypi://`` mirror.

    Returns:
        ``(name, version, member)`` with ``member`` None when the URL has no path.

    Raises:
        ValueError: The URL is not of that form (the message says what is wrong).
    """
    rest = url[len("pypi://") :]
    spec, _, member = rest.partition("/")
    name, sep, version = spec.partition("==")
    if not sep or not _PYPI_NAME.match(name) or not _PYPI_VERSION.match(version):
        raise ValueError(
            f"malformed pypi URL {url!r}: expected pypi://NAME==VERSION/path/inside/the/wheel "
            "with an exact '==' pin"
        )
    return name, version, (member or None)


def redact(url: str) -> str:
    """Drop user:password from a URL so it can appear in messages and logs."""
    if url_kind(url) is UrlKind.LOCAL:
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def url_basename(url: str) -> str:
    """File name a mirror implies: the last path component, unquoted, without query."""
    kind = url_kind(url)
    if kind is UrlKind.LOCAL:
        return Path(url).name
    if kind is UrlKind.PYPI:
        try:
            member = parse_pypi_url(url)[2]
        except ValueError:
            return ""
        return PurePosixPath(member).name if member else ""
    if kind is UrlKind.FSSPEC:  # the innermost target is named by the first segment with a path
        segment = next(seg for seg in url.split("::") if "://" in seg)
        path = segment.split("://", 1)[1].split("?", 1)[0]
        return unquote(PurePosixPath(path).name) if "/" in path or "::" in url else ""
    return unquote(PurePosixPath(urlsplit(url).path).name)


def _filename_problem(name: str, what: str) -> str | None:
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        return f"{what} {name!r} is not a plain file name"
    if name.startswith(".") or name.endswith((".part", ".lock", ".verified")):
        return f"{what} {name!r} must not start with '.' or end in .part/.lock/.verified"
    return None


def _member_problem(member: str) -> str | None:
    path = PurePosixPath(member)
    if member.startswith("/") or "\\" in member or ".." in path.parts or not path.name:
        return f"member {member!r} must be a relative POSIX path inside the archive"
    return None


@dataclass(frozen=True)
class Source:
    """One file a dataset needs: where to get it and how to verify it.

    A source is fetched with :func:`cellbench.store.fetch.fetch`, which tries ``urls`` in order
    and returns a local file whose sha256 has been checked.

    Attributes:
        urls: Mirrors of the same content, tried in order. Each is ``https://``/``http://``,
            any fsspec URL (``s3://``, ``gs://``, ``hf://``, ``memory://``, ``file://``, ...),
            ``pypi://NAME==VERSION/path/inside/the/distribution``, or a local path (absolute,
            ``~``-prefixed, or relative: see :meth:`from_card`).
        sha256: sha256 (64 lowercase hex digits) of the downloaded file, i.e. the archive when
            ``member`` is set. Required unless every mirror is ``pypi://``: a wheel can be
            platform-specific, so for PyPI the verified content is ``member_sha256``; when
            ``sha256`` is given anyway, the downloaded distribution is checked against it too.
        filename: Name of the file :func:`fetch` returns (the extracted member when ``member``
            is set). Default: the member's base name, else the first mirror's base name.
        member: Path of a file inside the downloaded archive (zip/wheel, tar, tar.gz, tar.bz2,
            tar.xz) to extract and return instead of the archive. For ``pypi://`` mirrors it may
            also be given as the URL path.
        member_sha256: sha256 of the extracted member; required when ``member`` is set.
        size: Expected size in bytes of the downloaded file, if known: sizes the progress bar,
            rejects a mirror whose server announces another size before downloading it, and
            stops a download that overruns it.
        storage_options: Keyword arguments for fsspec mirrors (e.g. ``{"anon": True}`` or
            ``{"endpoint_url": "https://..."}``); ignored by other mirror kinds. Left out of
            ``repr`` because it may hold credentials.

    Raises:
        CardError: On construction, listing every invalid field on one line.
    """

    urls: tuple[str, ...]
    sha256: str | None
    filename: str | None = None
    member: str | None = None
    member_sha256: str | None = None
    size: int | None = None
    storage_options: dict[str, Any] = field(default_factory=dict, hash=False, repr=False)

    def __post_init__(self) -> None:
        urls = (self.urls,) if isinstance(self.urls, str) else tuple(self.urls)
        object.__setattr__(self, "urls", urls)
        for name in ("sha256", "member_sha256"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, value.strip().lower())
        object.__setattr__(self, "storage_options", dict(self.storage_options or {}))
        problems = self._normalize_and_check()
        if problems:
            raise _InvalidSourceError(problems, self._label_for_errors())

    # -- construction from a card -----------------------------------------------------------

    @classmethod
    def from_card(
        cls,
        entry: Mapping[str, Any],
        *,
        base_dir: str | os.PathLike[str] | None = None,
        context: str = "source",
    ) -> Source:
        """Parse one entry of a dataset card's ``sources:`` list.

        Recognised keys: ``url`` (one mirror) or ``urls`` (a list of mirrors), ``sha256``,
        ``filename``, ``member``, ``member_sha256``, ``size``, ``storage_options``; the
        descriptive keys ``name``, ``description``, ``license``, ``homepage``, ``citation`` and
        ``notes`` are accepted and ignored. Any other key is an error (it is most likely a typo
        of a checksum field).

        Args:
            entry: The mapping read from YAML.
            base_dir: Directory that relative local paths are resolved against (normally the
                card's directory); ``~`` is expanded. Without it, relative paths are resolved
                against the working directory when fetching.
            context: What the entry is, for error messages (e.g. ``"bbbc039/card.yaml
                sources[0]"``).

        Returns:
            The validated :class:`Source`.

        Raises:
            CardError: One line naming ``context`` and every missing or invalid field.
        """
        if not isinstance(entry, Mapping):
            raise CardError(f"{context}: expected a mapping, got {type(entry).__name__}")
        problems: list[str] = []
        unknown = sorted(set(map(str, entry)) - FETCH_KEYS - INFO_KEYS)
        if unknown:
            allowed = ", ".join(sorted(FETCH_KEYS | INFO_KEYS))
            problems.append(f"unknown field(s) {', '.join(unknown)} (allowed: {allowed})")

        urls: list[str] = []
        if "url" in entry and "urls" in entry:
            problems.append("give either 'url' or 'urls', not both")
        raw = entry.get("urls", entry.get("url"))
        if raw is None:
            problems.append("missing field 'url' (or 'urls': a list of mirrors)")
        elif isinstance(raw, str):
            urls = [raw]
        elif isinstance(raw, list | tuple) and raw and all(isinstance(u, str) for u in raw):
            urls = list(raw)
        else:
            problems.append("'urls' must be a non-empty list of strings")

        kwargs: dict[str, Any] = {}
        for key in ("sha256", "filename", "member", "member_sha256"):
            value = entry.get(key)
            if value is not None and not isinstance(value, str):
                problems.append(f"'{key}' must be a string, got {type(value).__name__}")
            else:
                kwargs[key] = value
        size = entry.get("size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int)):
            problems.append(f"'size' must be an integer number of bytes, got {size!r}")
        else:
            kwargs["size"] = size
        options = entry.get("storage_options") or {}
        if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
            problems.append("'storage_options' must be a mapping with string keys")
        else:
            kwargs["storage_options"] = dict(options)

        if base_dir is not None:
            base = Path(base_dir).expanduser()
            urls = [
                str((base / Path(u).expanduser()).resolve()) if url_kind(u) is UrlKind.LOCAL else u
                for u in urls
            ]
        # Field-level checks need well-typed fields; unknown keys do not prevent them.
        if urls and len(kwargs) == 6:
            try:
                source = cls(urls=tuple(urls), **kwargs)
            except _InvalidSourceError as exc:
                problems.extend(exc.problems)
            else:
                if not problems:
                    return source
        raise CardError(f"{context}: " + "; ".join(problems))

    # -- derived names ------------------------------------------------------------------------

    @property
    def local_name(self) -> str:
        """Name of the file :func:`fetch` returns (from ``filename``, ``member`` or the URL)."""
        if self.filename:
            return self.filename
        if self.member:
            return PurePosixPath(self.member).name
        return url_basename(self.urls[0])

    @property
    def archive_name(self) -> str:
        """Name under which the downloaded file is cached.

        Equal to ``local_name`` unless a member is extracted; then the first non-pypi mirror's
        base name.
        """
        if self.member is None:
            return self.local_name
        names = [url_basename(u) for u in self.urls if url_kind(u) is not UrlKind.PYPI]
        return names[0] if names and names[0] else "archive"

    @property
    def target_sha256(self) -> str:
        """The sha256 of the file :func:`fetch` returns (the member's when set)."""
        digest = self.member_sha256 if self.member is not None else self.sha256
        assert digest is not None  # guaranteed by validation
        return digest

    def describe(self) -> str:
        """Short human label: the returned file name and the first mirror."""
        more = f" (+{len(self.urls) - 1} mirror(s))" if len(self.urls) > 1 else ""
        return f"{self.local_name!r} from {redact(self.urls[0])}{more}"

    def _label_for_errors(self) -> str:
        return repr(self.urls[0]) if self.urls else "with no urls"

    # -- validation ----------------------------------------------------------------------------

    def _normalize_and_check(self) -> list[str]:
        """Validate every field, filling ``member`` from a pypi URL path; return problems."""
        problems: list[str] = []
        if not self.urls:
            return ["no mirrors given (field 'url' or 'urls')"]
        kinds = []
        url_members: set[str] = set()
        for url in self.urls:
            if not isinstance(url, str) or not url.strip():
                problems.append(f"mirror {url!r} is not a non-empty string")
                continue
            kind = url_kind(url)
            kinds.append(kind)
            if kind is UrlKind.PYPI:
                try:
                    member = parse_pypi_url(url)[2]
                except ValueError as exc:
                    problems.append(str(exc))
                    continue
                if member is not None:
                    url_members.add(member)
            elif kind is UrlKind.FSSPEC:
                problem = _fsspec_protocol_problem(url)
                if problem:
                    problems.append(problem)
            elif kind is UrlKind.HTTP and not urlsplit(url).netloc:
                problems.append(f"mirror {url!r} has no host")
        if len(url_members) > 1:
            problems.append(f"pypi mirrors name different members: {sorted(url_members)}")
        elif url_members:
            (url_member,) = url_members
            if self.member is None:
                object.__setattr__(self, "member", url_member)
            elif self.member != url_member:
                problems.append(
                    f"member {self.member!r} differs from the pypi URL path {url_member!r}"
                )
        if problems:
            return problems

        only_pypi = all(k is UrlKind.PYPI for k in kinds)
        for name in ("sha256", "member_sha256"):
            value = getattr(self, name)
            if value is not None and not _SHA256.match(value):
                problems.append(f"'{name}' must be 64 hex digits, got {value!r}")
        if self.sha256 is None and not only_pypi:
            problems.append(
                "missing field 'sha256' (sha256 of the downloaded file, 64 hex digits; "
                "only pypi:// sources may omit it)"
            )
        if UrlKind.PYPI in kinds and self.member is None:
            problems.append(
                "pypi sources must name a file inside the distribution "
                "(pypi://NAME==VERSION/path/in/wheel or field 'member')"
            )
        if self.member is not None:
            problem = _member_problem(self.member)
            if problem:
                problems.append(problem)
            if self.member_sha256 is None:
                problems.append("missing field 'member_sha256' (required with 'member')")
        elif self.member_sha256 is not None:
            problems.append("'member_sha256' given without 'member'")
        if self.size is not None and (
            isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0
        ):
            problems.append(f"'size' must be a non-negative integer, got {self.size!r}")
        if self.size is not None and self.sha256 is None:
            problems.append("'size' describes the downloaded file and needs 'sha256' with it")
        if self.filename is not None:
            problem = _filename_problem(self.filename, "filename")
            if problem:
                problems.append(problem)
        elif not problems:
            problem = _filename_problem(self.local_name, "file name derived from the URL")
            if problem:
                problems.append(problem + "; set 'filename'")
        return problems


def _fsspec_protocol_problem(url: str) -> str | None:
    import fsspec

    known = set(fsspec.available_protocols())
    for protocol in fsspec_protocols(url):
        if protocol in known:
            continue
        return (
            f"unknown URL scheme {protocol!r} in {redact(url)!r} (expected https://, http://, "
            "pypi://NAME==VERSION/member, a local path, or an fsspec protocol such as s3://, "
            "gs://, hf://, memory://, file://)"
        )
    return None
