"""The server side of the planner's protection: TLS on the listening port and a shared token checked
on every call (see `planner_api.security` for the environment variables both sides read).

- The token comes from `--token-file PATH`, else `PLANNER_TOKEN_FILE`, else `PLANNER_TOKEN`: never
  from a command-line value (it would show in `ps`), never logged. Calls of the Planner service (and
  any unknown method) without `authorization: Bearer <token>`, or with another token, are refused
  with UNAUTHENTICATED before the request is even parsed; tokens are compared with
  `hmac.compare_digest`.
- The gRPC health service stays open: it tells only SERVING or NOT_SERVING, and load balancers,
  Ray and `PlannerClient.wait_ready` probe it without a secret. With TLS it is served over TLS too.
- TLS: `--tls-cert`/`--tls-key` (else `PLANNER_TLS_CERT`/`PLANNER_TLS_KEY`), PEM files.
"""
from __future__ import annotations

import argparse
import hmac
import ipaddress
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import grpc

from planner_api.security import (
    AUTH_METADATA_KEY,
    BEARER,
    ENV_TLS_CERT,
    ENV_TLS_KEY,
    ENV_TOKEN,
    ENV_TOKEN_FILE,
    read_pem,
    read_token_file,
    token_from_env,
)

logger = logging.getLogger(__name__)

# Methods anyone may call: the health service (see the module's docstring).
OPEN_METHOD_PREFIXES: tuple[str, ...] = ("/grpc.health.v1.Health/",)


@dataclass(frozen=True)
class ServerSecurity:
    """The token the server requires (None: none) and its TLS certificate chain and key (None:
    plaintext). The secrets stay out of repr()."""

    token: str | None = field(default=None, repr=False)
    certificate_chain: bytes | None = field(default=None, repr=False)
    private_key: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, token_file: str | None = None,
                 tls_cert: str | None = None, tls_key: str | None = None) -> ServerSecurity:
        """Options (the CLI's --token-file, --tls-cert, --tls-key) win over the environment
        (PLANNER_TOKEN_FILE / PLANNER_TOKEN, PLANNER_TLS_CERT / PLANNER_TLS_KEY). ValueError naming
        the option, variable or file at fault."""
        env = os.environ if env is None else env
        token = read_token_file(token_file, "--token-file") if token_file else token_from_env(env)
        cert = tls_cert or env.get(ENV_TLS_CERT) or None
        key = tls_key or env.get(ENV_TLS_KEY) or None
        if bool(cert) != bool(key):
            raise ValueError(f"TLS needs both a certificate and its key: set --tls-cert and --tls-key "
                             f"(or ${ENV_TLS_CERT} and ${ENV_TLS_KEY}), or neither")
        return cls(token=token,
                   certificate_chain=read_pem(cert, "the planner's TLS certificate") if cert else None,
                   private_key=read_pem(key, "the planner's TLS private key") if key else None)

    @property
    def tls(self) -> bool:
        return self.certificate_chain is not None

    def describe(self) -> str:
        """A log-safe summary, e.g. "TLS, token required"."""
        return f"{'TLS' if self.tls else 'plaintext'}, {'token required' if self.token else 'no token'}"

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return [TokenInterceptor(self.token)] if self.token else []

    def bind(self, server: grpc.aio.Server, address: str) -> int:
        """Adds the listening port (TLS when configured); returns the bound port (0: failed)."""
        if self.tls:
            credentials = grpc.ssl_server_credentials([(self.private_key, self.certificate_chain)])
            return server.add_secure_port(address, credentials)
        return server.add_insecure_port(address)

    def warn_if_exposed(self, host: str) -> None:
        """Logs what is unsafe about serving on `host` with these settings (nothing on loopback)."""
        if _is_loopback(host):
            return
        if not self.token:
            logger.warning("the planner service on %s requires no token: anyone who reaches the port "
                           "can call it (set %s)", host, ENV_TOKEN_FILE)
        if not self.tls:
            logger.warning("the planner service on %s speaks plaintext%s (set --tls-cert/--tls-key)", host,
                           ": its token travels in clear text" if self.token else "")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def _refuse_missing(request: object, context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                        f"the planner requires a token: send '{AUTH_METADATA_KEY}: {BEARER}<token>'")


async def _refuse_wrong(request: object, context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "the planner token is wrong")


# Raw bytes in, nothing parsed: an unauthenticated caller never reaches the protobuf decoder.
_MISSING = grpc.unary_unary_rpc_method_handler(_refuse_missing)
_WRONG = grpc.unary_unary_rpc_method_handler(_refuse_wrong)


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every call outside OPEN_METHOD_PREFIXES whose `authorization` metadata is not
    "Bearer <token>" with UNAUTHENTICATED. Counts refusals in `refused`; logs the first of each
    kind (method and peer, never a token)."""

    def __init__(self, token: str) -> None:
        self._expected = (BEARER + token).encode("ascii")
        self.refused = 0
        self._logged: set[str] = set()

    async def intercept_service(self, continuation, handler_call_details: grpc.HandlerCallDetails):
        method = handler_call_details.method or ""
        if method.startswith(OPEN_METHOD_PREFIXES):
            return await continuation(handler_call_details)
        sent = [value for key, value in (handler_call_details.invocation_metadata or ())
                if key == AUTH_METADATA_KEY]
        if len(sent) == 1:
            value = sent[0].encode("utf-8", "replace") if isinstance(sent[0], str) else bytes(sent[0])
            if hmac.compare_digest(value, self._expected):
                return await continuation(handler_call_details)
        kind = "without a token" if not sent else "with a wrong token"
        self.refused += 1
        if kind not in self._logged:
            self._logged.add(kind)
            logger.warning("refused a %s call %s (UNAUTHENTICATED; later refusals are only counted)",
                           method, kind)
        return _MISSING if not sent else _WRONG


def add_security_arguments(parser: argparse.ArgumentParser) -> None:
    """--token-file, --tls-cert, --tls-key (no option takes the token itself: `ps` shows argv)."""
    group = parser.add_argument_group(
        "exposure", f"Protect a service bound to an address others can reach. The token comes from "
        f"--token-file, else ${ENV_TOKEN_FILE}, else ${ENV_TOKEN} (never a command-line value); calls "
        "without it get UNAUTHENTICATED. The gRPC health service stays open.")
    group.add_argument("--token-file", metavar="PATH",
                       help=f"file holding the shared token clients must send (default ${ENV_TOKEN_FILE})")
    group.add_argument("--tls-cert", metavar="PEM",
                       help=f"TLS certificate chain of the service (default ${ENV_TLS_CERT}); needs --tls-key")
    group.add_argument("--tls-key", metavar="PEM",
                       help=f"TLS private key of the service (default ${ENV_TLS_KEY})")


def security_from_args(args: argparse.Namespace) -> ServerSecurity:
    """The ServerSecurity of parsed CLI options over the environment; ValueError when unusable."""
    return ServerSecurity.from_env(token_file=args.token_file, tls_cert=args.tls_cert, tls_key=args.tls_key)


__all__ = ["OPEN_METHOD_PREFIXES", "ServerSecurity", "TokenInterceptor", "add_security_arguments",
           "security_from_args"]
