"""Talk to a challenge server over HTTP (httpx): submit, follow a submission, pull public data.

Used by ``cellbench submit --server URL``, ``cellbench server status --server URL`` and
``cellbench datasets pull ID --public --server URL``. The token comes from ``--token`` or
``$CELLBENCH_TOKEN``. A submission that is a folder (a ``.zarr`` prediction store, a TIFF
folder, a safetensors package) is zipped first; a file is sent as it is.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cellbench import settings
from cellbench.errors import CellbenchError, ValidationError

TOKEN_ENV = settings.TOKEN


class ServerError(CellbenchError):
    """The server refused a request or could not be reached."""


class _Progress(io.RawIOBase):
    """A file wrapper that reports how many bytes were read (upload progress)."""

    def __init__(self, fh: Any, callback: Callable[[int], None]) -> None:
        self.fh, self.callback = fh, callback

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        if data:
            self.callback(len(data))
        return data


def _zip_folder(folder: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_symlink():
                raise ValidationError([f"{path}: symbolic links are not uploaded"], "submission")
            arc = f"{folder.name}/{path.relative_to(folder).as_posix()}"
            if path.is_dir():
                zf.writestr(arc + "/", b"")
            else:
                zf.write(path, arc)
    return dest


class Client:
    """A challenge server.

    Args:
        url: Base URL (``http://host:port``).
        token: Team token (default ``$CELLBENCH_TOKEN``).
        timeout: Seconds per request.
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 120.0) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.token = settings.server_token(token)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def _check(self, response: Any) -> Any:
        if response.status_code < 400:
            return response.json()
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:300]
        if isinstance(detail, dict) and "problems" in detail:
            raise ValidationError(detail["problems"], context=f"server {self.url}")
        hint = ""
        if response.status_code == 401:
            hint = f" (give --token or set ${TOKEN_ENV})"
        raise ServerError(f"server {self.url}: {response.status_code} {detail}{hint}")

    def get(self, path: str) -> Any:
        """GET a JSON endpoint."""
        import httpx

        try:
            return self._check(self.http.get(path))
        except httpx.HTTPError as err:
            raise ServerError(f"cannot reach {self.url}: {err}") from None

    def challenges(self) -> list[dict[str, Any]]:
        """Every challenge the server runs."""
        return list(self.get("/api/challenges")["challenges"])

    def pick_challenge(self, challenge: str | None, dataset: str | None = None) -> dict[str, Any]:
        """The challenge named, or the only one (matching ``dataset`` when given)."""
        found = self.challenges()
        if challenge:
            for c in found:
                if c["id"] == challenge:
                    return c
            raise ServerError(f"server {self.url} runs no challenge {challenge!r}")
        if dataset:
            found = [c for c in found if c["dataset"].split("@")[0] == dataset.split("@")[0]]
            if "@" in dataset:
                found = [c for c in found if c["dataset"] == dataset]
        if len(found) != 1:
            ids = ", ".join(c["id"] for c in found) or "none"
            raise ServerError(f"server {self.url}: choose a challenge with --challenge ({ids})")
        return found[0]

    def submit(
        self,
        manifest_path: Path,
        challenge: str | None = None,
        on_upload: Callable[[int, int], None] | None = None,
    ) -> dict[str, Any]:
        """Upload the submission a manifest describes; return ``{"id", "state", ...}``.

        Raises:
            ValidationError: Every problem the server found with the manifest or the upload.
            ServerError: Any other refusal (401, 403, 413, 429 with its reset time).
        """
        import httpx

        from cellbench.challenge.config import strict_yaml
        from cellbench.store.location import is_remote
        from cellbench.submissions.manifest import submission_location

        text = manifest_path.read_text(encoding="utf-8")
        data = strict_yaml(text, str(manifest_path))
        if not isinstance(data, dict) or not data.get("submission"):
            raise ValidationError(["the manifest names no 'submission'"], str(manifest_path))
        named = str(data["submission"])
        if is_remote(named):
            raise ValidationError(
                [
                    f"submission: {named} is a URL; a challenge server is sent the files "
                    "themselves: copy them here and name the local folder or file"
                ],
                str(manifest_path),
            )
        target = submission_location(named, manifest_path)
        if not target.exists():
            raise ValidationError([f"submission: {target} does not exist"], str(manifest_path))
        chosen = self.pick_challenge(challenge)
        with tempfile.TemporaryDirectory() as tmp:
            upload = target
            if target.is_dir():
                upload = _zip_folder(target, Path(tmp) / f"{target.name}.zip")
            size = upload.stat().st_size
            sent = [0]

            def progress(n: int) -> None:
                sent[0] += n
                if on_upload is not None:
                    on_upload(sent[0], size)

            with upload.open("rb") as fh:
                files = {"file": (upload.name, _Progress(fh, progress), "application/octet-stream")}
                form = {"manifest": text, "kind": str(data.get("kind") or "predictions")}
                try:
                    response = self.http.post(
                        f"/api/challenges/{chosen['id']}/submissions", data=form, files=files
                    )
                except httpx.HTTPError as err:
                    raise ServerError(f"upload to {self.url} failed: {err}") from None
        return dict(self._check(response))

    def status(self, submission: str) -> dict[str, Any]:
        """A submission's status."""
        return dict(self.get(f"/api/submissions/{submission}"))

    def follow(
        self,
        submission: str,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        poll_seconds: float = 1.0,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Poll until the submission reaches a final state; return its last status."""
        started = time.monotonic()
        while True:
            view = self.status(submission)
            if on_update is not None:
                on_update(view)
            if view["final"]:
                return view
            if timeout is not None and time.monotonic() - started > timeout:
                raise ServerError(
                    f"submission {submission} still {view['state']} after {timeout} s"
                )
            time.sleep(poll_seconds)

    def download_public_store(
        self, challenge: dict[str, Any], dest: Path, on_bytes: Callable[[int], None] | None = None
    ) -> str:
        """Download a challenge's public store archive to ``dest``; return its verified sha256.

        Raises:
            ServerError: If the download fails or its digest differs from the published one.
        """
        import httpx

        h = hashlib.sha256()
        try:
            with self.http.stream("GET", f"/api/challenges/{challenge['id']}/public-store") as r:
                if r.status_code >= 400:
                    raise ServerError(f"server {self.url}: {r.status_code} for the public store")
                with dest.open("wb") as out:
                    for chunk in r.iter_bytes(1 << 20):
                        h.update(chunk)
                        out.write(chunk)
                        if on_bytes is not None:
                            on_bytes(len(chunk))
        except httpx.HTTPError as err:
            raise ServerError(f"download from {self.url} failed: {err}") from None
        digest = h.hexdigest()
        if digest != challenge.get("public_store_sha256"):
            raise ServerError(
                f"public store of {challenge['id']}: sha256 {digest[:12]}... differs from the "
                f"published {str(challenge.get('public_store_sha256'))[:12]}..."
            )
        return digest
