"""Webhook signature check: hex HMAC-SHA256 of the raw body, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac


def sign(secret: bytes, body: bytes) -> str:
    """The hex HMAC-SHA256 Gitea puts in `X-Gitea-Signature`."""
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, body: bytes, signature_hex: str) -> bool:
    """True when `signature_hex` is the HMAC-SHA256 of `body` under `secret`."""
    # a non-ASCII header can never be our hex digest (and compare_digest refuses it)
    if not secret or not signature_hex or not signature_hex.isascii():
        return False
    return hmac.compare_digest(sign(secret, body), signature_hex.strip().lower())
