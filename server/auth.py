"""Who may call: API keys (compared in constant time), principals, and the UI's login check."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass
from typing import Literal

from fastapi import Request

from core.errors import ConfigError
from server.http_errors import ApiError

@dataclass(frozen=True)
class Principal:
    """Who is calling: an admin (any user) or one bound user."""

    role: Literal["admin", "user"]
    user_id: str | None = None

    def may_act_for(self, user_id: str) -> bool:
        return self.role == "admin" or self.user_id == user_id


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_keys_off_loopback(host: str, api_keys: dict[str, str]) -> None:
    """Refuse to expose user data beyond this machine without API keys."""
    if not is_loopback(host) and not api_keys:
        raise ConfigError(
            f"refusing to serve on {host} without API keys: anyone on the network could read and delete "
            "user data. Set RECASSIST_API_KEYS (e.g. 'KEY=admin,KEY2=user:alice') or bind to 127.0.0.1."
        )


def match_key(api_keys: dict[str, str], presented: str) -> str | None:
    """The role of the presented key, comparing against every key in constant time."""
    # Digests have one length, so the time taken tells nothing about the keys' lengths either.
    digest = hashlib.sha256(presented.encode("utf-8")).digest()
    found = None
    for key, role in api_keys.items():
        if hmac.compare_digest(hashlib.sha256(key.encode("utf-8")).digest(), digest):
            found = role
    return found


def principal_from_role(role: str) -> Principal:
    if role == "admin":
        return Principal("admin")
    return Principal("user", role.split(":", 1)[1])


def authenticator(api_keys: dict[str, str]):
    def authenticate(request: Request) -> Principal:
        if not api_keys:
            return Principal("admin")  # loopback without keys: a local, single-person setup
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "missing API key: send 'Authorization: Bearer KEY'")
        role = match_key(api_keys, token.strip())
        if role is None:
            raise ApiError(401, "unauthorized", "invalid API key")
        return principal_from_role(role)

    return authenticate


def require_user(principal: Principal, user_id: str) -> None:
    if not principal.may_act_for(user_id):
        raise ApiError(403, "forbidden", f"this API key may not act for user {user_id!r}")


def require_admin(principal: Principal) -> None:
    if principal.role != "admin":
        raise ApiError(403, "forbidden", "this endpoint needs an admin API key")


def ui_login(api_keys: dict[str, str]):
    """Gradio login check: user 'admin' with an admin key, or a user id with that user's key."""

    def check(username: str, password: str) -> bool:
        role = match_key(api_keys, password or "")
        if role is None:
            return False
        if role == "admin":
            return username == "admin"
        return username != "admin" and role == f"user:{username}"

    return check

