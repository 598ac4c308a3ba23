"""Signing keys and KERI/CESR encodings for the VVP verifier SIMULATOR.

Demo keys are derived from a seed text so the simulator (which must trust them)
and the minting tool (which signs with them) agree without sharing key files.
These keys are public knowledge: never use them outside demos and tests.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

DEMO_ISSUER_SEED = "vvp-demo-issuer"
DEFAULT_WITNESS = "http://witness.demo.example:5642"

# CESR derivation codes: "D" = Ed25519 transferable public key (1 char, 32 raw bytes),
# "0B" = Ed25519 signature (2 chars, 64 raw bytes).
_AID_CODE = "D"
_SIG_CODE = "0B"
_AID_LEN = 44
_SIG_LEN = 88


def b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding; raise ValueError on bad input."""
    if not isinstance(text, str) or any(c in text for c in "+/\n\r \t"):
        raise ValueError("not base64url text")
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.urlsafe_b64decode(padded.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError(f"invalid base64url: {exc}") from exc


def aid_for_public_key(raw_public: bytes) -> str:
    """KERI AID of a non-delegated single-key identifier: its CESR-encoded key.

    CESR pads the 32-byte key with one lead zero byte so the 1-char code replaces
    exactly one base64 character (44 chars in all), as keripy does.
    """
    if len(raw_public) != 32:
        raise ValueError("Ed25519 public key must be 32 bytes")
    return _AID_CODE + b64url_encode(b"\x00" + raw_public)[1:]


def public_key_from_aid(aid: str) -> bytes:
    """Inverse of aid_for_public_key; raise ValueError for anything else."""
    if not isinstance(aid, str) or len(aid) != _AID_LEN or not aid.startswith(_AID_CODE):
        raise ValueError("not a CESR Ed25519 (D) identifier")
    raw = b64url_decode("A" + aid[1:])
    if len(raw) != 33 or raw[0] != 0:
        raise ValueError("bad CESR lead bytes in identifier")
    return raw[1:]


def encode_cesr_signature(sig64: bytes) -> str:
    """CESR "0B" form of an Ed25519 signature: two lead zero bytes, code replaces "AA"."""
    if len(sig64) != 64:
        raise ValueError("Ed25519 signature must be 64 bytes")
    return _SIG_CODE + b64url_encode(b"\x00\x00" + sig64)[2:]


def decode_cesr_signature(text: str) -> bytes:
    """Raw 64-byte signature from its 88-char CESR form; ValueError on anything else."""
    if not isinstance(text, str) or len(text) != _SIG_LEN or not text.startswith(_SIG_CODE):
        raise ValueError("not a CESR Ed25519 (0B) signature")
    raw = b64url_decode("AA" + text[2:])
    if len(raw) != 66 or raw[:2] != b"\x00\x00":
        raise ValueError("bad CESR lead bytes in signature")
    return raw[2:]


def oobi_url(aid: str, witness: str = DEFAULT_WITNESS) -> str:
    return f"{witness.rstrip('/')}/oobi/{aid}/controller"


def aid_from_oobi(kid: str) -> str | None:
    """The AID named by an OOBI URL (`.../oobi/{aid}/...`), or None if there is none."""
    parts = kid.split("/")
    try:
        aid = parts[parts.index("oobi") + 1]
    except (ValueError, IndexError):
        return None
    return aid or None


def verify_signature(raw_public: bytes, signature: bytes, message: bytes) -> bool:
    if _nacl_verify is not None:
        return _nacl_verify(raw_public, signature, message)
    try:
        _public_key(raw_public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _libsodium_verify(raw_public: bytes, signature: bytes, message: bytes) -> bool:
    if len(raw_public) != 32 or len(signature) != 64:
        return False
    try:
        nacl_bindings.crypto_sign_open(signature + message, raw_public)
    except (BadSignatureError, ValueError):
        return False
    return True


try:  # the "fast" extra: libsodium verifies in about half the time OpenSSL takes
    import nacl.bindings as nacl_bindings
    from nacl.exceptions import BadSignatureError

    _nacl_verify: Callable[[bytes, bytes, bytes], bool] | None = _libsodium_verify
except ImportError:  # pragma: no cover
    _nacl_verify = None


@functools.lru_cache(maxsize=1024)
def _public_key(raw_public: bytes) -> Ed25519PublicKey:
    # A handful of issuers sign every call: their key objects are built once (still a
    # real signature check per call).
    return Ed25519PublicKey.from_public_bytes(raw_public)


@dataclass(frozen=True, slots=True)
class SigningKey:
    """An Ed25519 private key with its KERI identity."""

    seed: bytes

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise ValueError("Ed25519 seed must be 32 bytes")

    @classmethod
    def from_seed_text(cls, text: str) -> SigningKey:
        return cls(hashlib.sha256(text.encode("utf-8")).digest())

    @property
    def _private(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.seed)

    @property
    def public_bytes(self) -> bytes:
        return self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def aid(self) -> str:
        return aid_for_public_key(self.public_bytes)

    def oobi(self, witness: str = DEFAULT_WITNESS) -> str:
        return oobi_url(self.aid, witness)

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)


def trusted_keys(seed_texts: tuple[str, ...] | list[str]) -> dict[str, bytes]:
    """AID -> raw public key for the seeds the simulator is told to trust."""
    keys = [SigningKey.from_seed_text(s) for s in seed_texts]
    return {k.aid: k.public_bytes for k in keys}
