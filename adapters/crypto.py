"""Secrets at rest: members' external calendar passwords, encrypted with their tenant's key.

Each tenant has its own `data_key` (Fernet: AES-128-CBC + HMAC-SHA256, with a timestamp), or
several while rotating: the first encrypts, any decrypts. A tenant without a key cannot store
an external calendar account at all, rather than storing it in clear.

    >>> cipher = TenantCipher({"north": [Fernet.generate_key().decode()]})
    >>> cipher.decrypt("north", cipher.encrypt("north", b"app-password"))
    b'app-password'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from plugin.services.ports import StoreError


class MissingTenantKey(StoreError):
    """The tenant has no data_key, so its members' external passwords cannot be stored."""


class UnreadableSecret(StoreError):
    """A stored secret does not decrypt with any of the tenant's keys (key lost or rotated out)."""


def valid_key(key: str) -> bool:
    try:
        Fernet(key.encode())
    except (ValueError, TypeError):
        return False
    return True


class TenantCipher:
    def __init__(self, keys: Mapping[str, Sequence[str]]) -> None:
        self._fernets = {
            tenant_id: MultiFernet([Fernet(k.encode()) for k in tenant_keys])
            for tenant_id, tenant_keys in keys.items()
            if tenant_keys
        }

    def has_key(self, tenant_id: str) -> bool:
        return tenant_id in self._fernets

    def _fernet(self, tenant_id: str) -> MultiFernet:
        try:
            return self._fernets[tenant_id]
        except KeyError:
            raise MissingTenantKey(f"tenant {tenant_id!r} has no data_key configured") from None

    def encrypt(self, tenant_id: str, plaintext: bytes) -> bytes:
        return self._fernet(tenant_id).encrypt(plaintext)

    def decrypt(self, tenant_id: str, ciphertext: bytes) -> bytes:
        try:
            return self._fernet(tenant_id).decrypt(ciphertext)
        except InvalidToken as exc:
            raise UnreadableSecret(
                f"a stored secret of tenant {tenant_id!r} does not decrypt"
            ) from exc
