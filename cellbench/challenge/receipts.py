"""Signed receipts: what the server scored, with which data, scorer and parameters.

A receipt is a JSON object signed with the server's Ed25519 key (``cryptography``)::

    {"receipt": {...fields...},
     "signature": {"algorithm": "Ed25519", "key_id": "<16 hex>", "value": "<base64>"}}

The signature covers the canonical JSON of ``receipt`` (keys sorted, no spaces, UTF-8, no
NaN). Anyone holding the server's public key checks it offline with
``cellbench receipt verify RECEIPT --key server.pub``; ``key_id`` (the first 16 hex digits of
the sha256 of the raw public key) names the key, so receipts signed before a key rotation
still verify with the retired public key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cellbench.errors import CellbenchError

RECEIPT_TYPE = "cellbench-receipt"
RECEIPT_VERSION = 1
_PRIVATE_NAME = "receipt-ed25519.pem"


class ReceiptError(CellbenchError):
    """A receipt is malformed or its signature does not verify."""


def json_safe(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become None, tuples lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def canonical(receipt: dict[str, Any]) -> bytes:
    """The bytes a signature covers: sorted keys, compact separators, UTF-8, no NaN."""
    return json.dumps(
        receipt, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def key_id(public_raw: bytes) -> str:
    """Identifier of a public key: the first 16 hex digits of sha256 of its raw bytes."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


@dataclass
class SigningKey:
    """The server's receipt key.

    Attributes:
        private: The Ed25519 private key.
        key_id: Its identifier.
        public_pem: The public key (PEM), as published.
    """

    private: Any
    key_id: str
    public_pem: bytes

    def sign(self, receipt: dict[str, Any]) -> dict[str, Any]:
        """Return the signed receipt document."""
        body = json_safe(receipt)
        signature = self.private.sign(canonical(body))
        return {
            "receipt": body,
            "signature": {
                "algorithm": "Ed25519",
                "key_id": self.key_id,
                "value": base64.b64encode(signature).decode("ascii"),
            },
        }


def _public_raw(public: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _public_pem(public: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_or_create_key(folder: str | Path) -> SigningKey:
    """The server's signing key in ``folder`` (created, mode 0600, on first use).

    The public key is written beside it as ``<key_id>.pub`` (PEM) and ``server.pub``.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    path = folder / _PRIVATE_NAME
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
    private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    public = private.public_key()
    kid = key_id(_public_raw(public))
    pem = _public_pem(public)
    for name in (f"{kid}.pub", "server.pub"):
        target = folder / name
        if not target.exists() or target.read_bytes() != pem:
            target.write_bytes(pem)
    return SigningKey(private=private, key_id=kid, public_pem=pem)


def rotate_key(folder: str | Path) -> tuple[str, str]:
    """Retire the current key (its public half stays published) and create a new one.

    Returns:
        ``(old key id, new key id)``.
    """
    folder = Path(folder)
    old = load_or_create_key(folder)
    retired = folder / "retired"
    retired.mkdir(exist_ok=True)
    (folder / _PRIVATE_NAME).rename(retired / f"{old.key_id}.pem")
    new = load_or_create_key(folder)
    return old.key_id, new.key_id


def public_keys(folder: str | Path) -> dict[str, str]:
    """Every public key the server has signed with: ``{key_id: PEM}`` (current and retired)."""
    out = {}
    for path in sorted(Path(folder).glob("*.pub")):
        if path.name != "server.pub":
            out[path.stem] = path.read_text(encoding="ascii")
    return out


def verify_receipt(document: Any, public_pem: bytes) -> dict[str, Any]:
    """Check a signed receipt against a public key (PEM); return the receipt fields.

    Raises:
        ReceiptError: If the document is malformed, signed with another key, or altered.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not isinstance(document, dict) or set(document) != {"receipt", "signature"}:
        raise ReceiptError("not a cellbench receipt (expected 'receipt' and 'signature')")
    body, sig = document["receipt"], document["signature"]
    if not isinstance(body, dict) or body.get("type") != RECEIPT_TYPE:
        raise ReceiptError("not a cellbench receipt (wrong type)")
    if not isinstance(sig, dict) or sig.get("algorithm") != "Ed25519":
        raise ReceiptError("unsupported signature algorithm (expected Ed25519)")
    try:
        public = serialization.load_pem_public_key(public_pem)
    except ValueError as err:
        raise ReceiptError(f"the key is not a PEM public key ({err})") from None
    if not isinstance(public, Ed25519PublicKey):
        raise ReceiptError("the key is not an Ed25519 public key")
    kid = key_id(_public_raw(public))
    if sig.get("key_id") != kid:
        raise ReceiptError(
            f"receipt was signed with key {sig.get('key_id')!r}, this key is {kid!r}"
        )
    try:
        raw = base64.b64decode(str(sig.get("value", "")), validate=True)
        public.verify(raw, canonical(body))
    except (InvalidSignature, ValueError):
        raise ReceiptError("signature does not verify: the receipt was altered") from None
    return body
