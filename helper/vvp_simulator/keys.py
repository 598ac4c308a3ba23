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

# KERI derivation codes of a single Ed25519 key, as keripy's MtrDex has them: "D" = Ed25519
# (transferable: the identifier can rotate its key), "B" = Ed25519N (non-transferable). Both
# are 44 characters: the code, then the 32-byte key with one lead zero byte (see below).
AID_CODES: tuple[str, ...] = ("D", "B")
TRANSFERABLE = "D"
NON_TRANSFERABLE = "B"
_AID_LEN = 44

# Signature codes the real verifier accepts on an 88-character PASSporT signature. In keripy's
# MtrDex, "0B" is Ed25519_Sig (the one the VVP issuer writes), "0A" Salt_128 (a 16-byte salt),
# "0C" ECDSA_256k1_Sig and "0D" Blake3_512 (a digest); "AA" is an indexed Ed25519 signature
# (IdrDex "A", index 0). The VVP services read 0A-0D as "Ed25519, index 0-3" instead; for all
# five they decode the 86 characters after the code as plain base64url of the 64 signature
# bytes (no CESR lead-byte alignment). The simulator accepts exactly that, as the verifier does.
SIG_CODES: tuple[str, ...] = ("0A", "0B", "0C", "0D", "AA")
SIG_CODE = "0B"
_SIG_LEN = 88
SIG_FORMS: tuple[str, ...] = ("cesr", "jws")


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


def aid_for_public_key(raw_public: bytes, code: str = TRANSFERABLE) -> str:
    """KERI AID of a non-delegated single-key identifier: its CESR-encoded key.

    CESR pads the 32-byte key with one lead zero byte so the 1-char code replaces
    exactly one base64 character (44 chars in all), as keripy does for "D" and "B".
    """
    if len(raw_public) != 32:
        raise ValueError("Ed25519 public key must be 32 bytes")
    if code not in AID_CODES:
        raise ValueError(f"AID code must be one of {', '.join(AID_CODES)}")
    return code + b64url_encode(b"\x00" + raw_public)[1:]


def public_key_from_aid(aid: str) -> bytes:
    """Inverse of aid_for_public_key (either code); raise ValueError for anything else."""
    if not isinstance(aid, str) or len(aid) != _AID_LEN or aid[:1] not in AID_CODES:
        raise ValueError("not a CESR Ed25519 identifier (D or B prefix, 44 characters)")
    raw = b64url_decode("A" + aid[1:])
    if len(raw) != 33 or raw[0] != 0:
        raise ValueError("bad CESR lead bytes in identifier")
    return raw[1:]


def encode_signature(sig64: bytes, form: str = "cesr") -> str:
    """A PASSporT signature part: "cesr" as the VVP issuer writes it ("0B" + 86 base64url
    characters, 88 in all), or "jws", the plain base64url of RFC 7515 (86 characters)."""
    if len(sig64) != 64:
        raise ValueError("Ed25519 signature must be 64 bytes")
    if form not in SIG_FORMS:
        raise ValueError(f"signature form must be one of {', '.join(SIG_FORMS)}")
    plain = b64url_encode(sig64)
    return SIG_CODE + plain if form == "cesr" else plain


def decode_signature(text: str) -> bytes:
    """Signature bytes from a PASSporT's third part, read as the real verifier reads it.

    88 characters starting with a known code: the 86 after the code must decode to exactly
    64 bytes. Anything else: base64url, any length (a wrong length then fails the signature
    check, not the parse). The stdlib's lenient decoder is used on purpose, as the verifier
    uses it: characters outside the alphabet are skipped, bad padding is an error.
    ValueError means the verifier's PASSPORT_PARSE_FAILED.
    """
    if len(text) == _SIG_LEN and text[:2] in SIG_CODES:
        body = text[2:]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (ValueError, UnicodeEncodeError) as exc:
            raise ValueError(f"CESR signature decode failed: {exc}") from exc
        if len(raw) != 64:
            raise ValueError(f"CESR signature decodes to {len(raw)} bytes, expected 64")
        return raw
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError(f"signature base64url decode failed: {exc}") from exc


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

    def aid_for(self, code: str = TRANSFERABLE) -> str:
        """The key's AID with the given code ("D" transferable, "B" non-transferable)."""
        return aid_for_public_key(self.public_bytes, code)

    def oobi(self, witness: str = DEFAULT_WITNESS, code: str = TRANSFERABLE) -> str:
        return oobi_url(self.aid_for(code), witness)

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)


def trusted_keys(
    seed_texts: tuple[str, ...] | list[str] = (), aids: tuple[str, ...] | list[str] = ()
) -> dict[str, bytes]:
    """AID -> raw public key for what the simulator is told to trust.

    A seed's key is trusted under both of its AIDs (the seed's holder can sign as either);
    an AID given on its own is trusted as written, its key read from the AID itself.
    ValueError names an AID that is not a D or B Ed25519 identifier.
    """
    trusted: dict[str, bytes] = {}
    for text in seed_texts:
        key = SigningKey.from_seed_text(text)
        for code in AID_CODES:
            trusted[key.aid_for(code)] = key.public_bytes
    for aid in aids:
        try:
            trusted[aid] = public_key_from_aid(aid)
        except ValueError as exc:
            raise ValueError(f"cannot trust {aid!r}: {exc}") from exc
    return trusted
