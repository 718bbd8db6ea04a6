"""Receipts: Ed25519 signatures that verify offline, refuse tampering, survive key rotation."""

import json

import pytest

from cellbench.challenge.receipts import (
    RECEIPT_TYPE,
    ReceiptError,
    load_or_create_key,
    public_keys,
    rotate_key,
    verify_receipt,
)


def _body(value=0.8):
    return {
        "type": RECEIPT_TYPE,
        "version": 1,
        "challenge": "c",
        "public": {"headline": {"value": value, "ci_low": float("nan")}},
    }


def test_sign_verify_tamper_and_rotate(tmp_path):
    keys = tmp_path / "keys"
    key = load_or_create_key(keys)
    assert (keys / "receipt-ed25519.pem").stat().st_mode & 0o777 == 0o600
    doc = json.loads(json.dumps(key.sign(_body())))  # through JSON, as a file would be
    assert doc["receipt"]["public"]["headline"]["ci_low"] is None  # no NaN in a receipt
    assert verify_receipt(doc, key.public_pem)["challenge"] == "c"
    tampered = json.loads(json.dumps(doc))
    tampered["receipt"]["public"]["headline"]["value"] = 0.9
    with pytest.raises(ReceiptError, match="altered"):
        verify_receipt(tampered, key.public_pem)
    forged = json.loads(json.dumps(doc))
    forged["signature"]["value"] = "AAAA"
    with pytest.raises(ReceiptError):
        verify_receipt(forged, key.public_pem)
    old_id, new_id = rotate_key(keys)
    assert old_id == key.key_id and new_id != old_id
    published = public_keys(keys)
    assert set(published) == {old_id, new_id}
    assert verify_receipt(doc, published[old_id].encode())  # old receipts still verify
    with pytest.raises(ReceiptError, match=f"signed with key '{old_id}'"):
        verify_receipt(doc, published[new_id].encode())
    with pytest.raises(ReceiptError, match="not a cellbench receipt"):
        verify_receipt({"receipt": {}}, key.public_pem)
