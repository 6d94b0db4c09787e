"""How the planner service is protected on a cluster: a shared token and TLS, both configured by
environment variables so that every process of a run (the driver, Ray actors on every node)
reads the same settings.

| variable | read by | meaning |
| --- | --- | --- |
| `PLANNER_TOKEN_FILE` | server and clients | path of a file holding the shared token (preferred) |
| `PLANNER_TOKEN` | server and clients | the shared token itself (when no file is set) |
| `PLANNER_TLS_CERT`, `PLANNER_TLS_KEY` | server | PEM files: its certificate chain and private key |
| `PLANNER_TLS_CA` | clients | PEM file: the root certificate that signed the server's |
| `PLANNER_TLS_SERVER_NAME` | clients | the name the server's certificate carries, when it is not the host dialled (one certificate for every replica) |

With a token set, a client sends `authorization: Bearer <token>` with every call and the server
refuses any call of the Planner service without it (UNAUTHENTICATED). With `PLANNER_TLS_CA` set,
clients speak TLS and verify the server. Neither set: plaintext without authentication, as on a
laptop where the service binds 127.0.0.1. The token is never logged, never part of a repr, and
never taken from a command line (it would show in `ps`).

Imports point down (DESIGN.md): the server side (`llm_server.security`) builds on this module.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc

logger = logging.getLogger(__name__)

ENV_TOKEN = "PLANNER_TOKEN"
ENV_TOKEN_FILE = "PLANNER_TOKEN_FILE"
ENV_TLS_CA = "PLANNER_TLS_CA"
ENV_TLS_CERT = "PLANNER_TLS_CERT"
ENV_TLS_KEY = "PLANNER_TLS_KEY"
ENV_TLS_SERVER_NAME = "PLANNER_TLS_SERVER_NAME"

AUTH_METADATA_KEY = "authorization"  # gRPC metadata keys are lower case
BEARER = "Bearer "
MAX_TOKEN_BYTES = 4096
MIN_TOKEN_CHARS = 16  # a short shared secret is guessable


def read_token_file(path: str | os.PathLike, source: str) -> str:
    """The token stored in the file at `path` (surrounding whitespace dropped); ValueError naming
    the file and `source` (where the path came from) when it is unreadable, empty or unusable. The
    token itself never appears in a message."""
    file = Path(path)
    try:
        raw = file.read_bytes()
        mode = file.stat().st_mode
    except OSError as error:
        raise ValueError(f"cannot read the planner token file {str(file)!r} ({source}): "
                         f"{error.strerror or error}") from None
    if len(raw) > MAX_TOKEN_BYTES:
        raise ValueError(f"planner token file {str(file)!r} ({source}) is {len(raw)} bytes; "
                         f"a token is at most {MAX_TOKEN_BYTES}")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("planner token file %r is readable by other users (mode %o); chmod 600 it",
                       str(file), stat.S_IMODE(mode))
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ValueError(f"planner token file {str(file)!r} ({source}) is not ASCII text") from None
    return check_token(token, f"the file {str(file)!r} ({source})")


def check_token(token: str, source: str) -> str:
    """`token` when it can travel as gRPC metadata; ValueError naming `source` (never the token)."""
    if not token:
        raise ValueError(f"the planner token from {source} is empty")
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"the planner token from {source} has {len(token)} characters; "
                         f"use at least {MIN_TOKEN_CHARS} (e.g. `openssl rand -hex 32`)")
    if not all(33 <= ord(ch) < 127 for ch in token):
        raise ValueError(f"the planner token from {source} must be printable ASCII without spaces")
    return token


def token_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """The shared token configured by PLANNER_TOKEN_FILE or PLANNER_TOKEN; None when neither is
    set; ValueError when both are, or when the one set is unusable."""
    env = os.environ if env is None else env
    path, value = env.get(ENV_TOKEN_FILE), env.get(ENV_TOKEN)
    if path and value is not None:
        raise ValueError(f"set one of {ENV_TOKEN_FILE} and {ENV_TOKEN}, not both")
    if path:
        return read_token_file(path, f"${ENV_TOKEN_FILE}")
    if value is not None:
        return check_token(value.strip(), f"${ENV_TOKEN}")
    return None


def read_pem(path: str | os.PathLike, what: str) -> bytes:
    """The bytes of a PEM file; ValueError naming the file and `what` it should hold."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read {what} {str(path)!r}: {error.strerror or error}") from None
    if b"-----BEGIN " not in data:
        raise ValueError(f"{what} {str(path)!r} is not a PEM file (no -----BEGIN line)")
    return data


@dataclass(frozen=True)
class ClientSecurity:
    """What a planner client sends: the token (as `authorization` metadata) and, with
    `root_certificates`, TLS that verifies the server (as `server_name` when given)."""

    token: str | None = field(default=None, repr=False)
    root_certificates: bytes | None = field(default=None, repr=False)
    server_name: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClientSecurity:
        """The settings of the PLANNER_* variables (see the module's table); ValueError naming the
        variable or file at fault."""
        env = os.environ if env is None else env
        ca = env.get(ENV_TLS_CA)
        return cls(token=token_from_env(env),
                   root_certificates=read_pem(ca, f"${ENV_TLS_CA}, the planner's root certificate")
                   if ca else None,
                   server_name=env.get(ENV_TLS_SERVER_NAME) or None)

    @property
    def tls(self) -> bool:
        return self.root_certificates is not None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The call metadata: the bearer token, or nothing."""
        return ((AUTH_METADATA_KEY, BEARER + self.token),) if self.token else ()

    def describe(self) -> str:
        """A log-safe summary, e.g. "TLS, token"."""
        return ", ".join(part for part, on in (("TLS", self.tls), ("token", bool(self.token))) if on) \
            or "plaintext, no token"

    def open_channel(self, target: str, options: list[tuple]) -> grpc.Channel:
        """A channel to `target`: TLS when root certificates are set, else plaintext (and a
        warning when a token would travel in clear text to a host other than loopback)."""
        if self.tls:
            credentials = grpc.ssl_channel_credentials(root_certificates=self.root_certificates)
            extra = [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []
            return grpc.secure_channel(target, credentials, options=options + extra)
        if self.token and not _all_loopback(target):
            logger.warning("the planner token is sent in clear text to %s: set %s (TLS) on a "
                           "network others can reach", target, ENV_TLS_CA)
        return grpc.insecure_channel(target, options=options)


def _all_loopback(target: str) -> bool:
    """Whether every host of a channel target ("h:p", "ipv4:a:p,b:p") is a loopback address."""
    body = target.split(":", 1)[1] if target.startswith(("ipv4:", "ipv6:")) else target
    for entry in body.split(","):
        host = entry.strip().rpartition(":")[0].strip("[]")
        if host == "localhost":
            continue
        try:
            if not ipaddress.ip_address(host).is_loopback:
                return False
        except ValueError:
            return False
    return True


__all__ = ["AUTH_METADATA_KEY", "BEARER", "ClientSecurity", "ENV_TLS_CA", "ENV_TLS_CERT",
           "ENV_TLS_KEY", "ENV_TLS_SERVER_NAME", "ENV_TOKEN", "ENV_TOKEN_FILE", "check_token",
           "read_pem", "read_token_file", "token_from_env"]
