"""Exposure of the planner service (docs/reliability.md, row 6): it binds 127.0.0.1 unless told
otherwise, and where it is exposed it can require TLS and a shared token.

Certificates are made at test time (a self-signed one, for 127.0.0.1 and "planner.test") with the
`cryptography` package, else the `openssl` command; the tests that need one are skipped, saying so,
when neither is there. Every server binds 127.0.0.1.
"""
from __future__ import annotations

import datetime
import importlib.util
import ipaddress
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llm_server.backends import make_backend
from llm_server.cli import build_parser
from llm_server.ray_actor import PlannerServer
from llm_server.security import ServerSecurity
from llm_server.server import DEFAULT_HOST, PlannerServerActor
from protos import planner_pb2, planner_pb2_grpc
from planner_api.contract import GRPC_MESSAGE_OPTIONS, PLANNER_SERVICE_NAME
from planner_api.security import ClientSecurity, token_from_env
from planner_api.client import PlannerClient, connect_planner
from planner_api.heuristics import heuristic_plan
from planner_api.history import make_history

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-planner-token-" + "7f3a9c1e5b2d4f60"
TIMEOUT_S = 10.0
SERVER_NAME = "planner.test"


def plan_request() -> planner_pb2.PlanRequest:
    req = planner_pb2.PlanRequest(category_names=["a", "b", "c", "d"], seed=3)
    for u in range(3):
        req.users.add(user_id=u, candidate_categories=[0, 1, 2, 3], num_categories=2,
                      history=make_history([(1, u, 1.0, 0)]))
    return req


def _self_signed_with_cryptography(cert: Path, key: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256()))
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))


def _self_signed_with_openssl(cert: Path, key: Path) -> None:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={SERVER_NAME}",
                    "-addext", f"subjectAltName=DNS:{SERVER_NAME},IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed certificate (its own root) and key, and a token file (mode 600)."""
    folder = tmp_path_factory.mktemp("pki")
    cert, key, token = folder / "planner.crt", folder / "planner.key", folder / "token"
    if importlib.util.find_spec("cryptography") is not None:
        _self_signed_with_cryptography(cert, key)
    elif shutil.which("openssl"):
        _self_signed_with_openssl(cert, key)
    else:
        pytest.skip("neither the cryptography package nor the openssl command is here to make a test certificate")
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    return {"cert": cert, "key": key, "token": token}


@pytest.fixture(scope="module")
def secure_server(pki) -> tuple[PlannerServerActor, str]:
    host = PlannerServerActor()
    security = ServerSecurity.from_env(env={}, token_file=str(pki["token"]), tls_cert=str(pki["cert"]),
                                       tls_key=str(pki["key"]))
    address = host.start_with_backend(make_backend("heuristic"), "127.0.0.1", 0, security)
    yield host, address
    host.stop()


def client_security(pki, token: str | None = TOKEN, **extra) -> ClientSecurity:
    return ClientSecurity(token=token, root_certificates=pki["cert"].read_bytes(), **extra)


def raw_plan(pki, address: str, metadata=()) -> grpc.RpcError | planner_pb2.PlanResponse:
    credentials = grpc.ssl_channel_credentials(root_certificates=pki["cert"].read_bytes())
    with grpc.secure_channel(address, credentials, options=GRPC_MESSAGE_OPTIONS) as channel:
        try:
            return planner_pb2_grpc.PlannerStub(channel).Plan(plan_request(), timeout=TIMEOUT_S, metadata=metadata)
        except grpc.RpcError as error:
            return error


# --- bind address -------------------------------------------------------------------------------


def test_the_service_binds_loopback_unless_told_otherwise() -> None:
    assert DEFAULT_HOST == "127.0.0.1"
    assert build_parser().parse_args([]).host == "127.0.0.1"
    host = PlannerServerActor()
    address = host.start()  # every default
    try:
        assert address.startswith("127.0.0.1:")
        port = int(address.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        # 127.0.0.2 is this machine too: a service bound to 0.0.0.0 would answer there.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", port), timeout=5).close()
    finally:
        host.stop()


def test_the_cli_has_no_option_that_takes_the_token_itself() -> None:
    options = {option for action in build_parser()._actions for option in action.option_strings}
    assert {"--token-file", "--tls-cert", "--tls-key"} <= options
    assert not {o for o in options if "token" in o and o != "--token-file"}


# --- TLS and token ------------------------------------------------------------------------------


def test_tls_and_the_right_token_get_answers(pki, secure_server) -> None:
    _, address = secure_server
    with PlannerClient(address, client_security(pki)) as client:
        client.wait_ready(TIMEOUT_S)
        response, fell_back = client.plan(plan_request(), TIMEOUT_S)
    assert not fell_back and response == heuristic_plan(plan_request())


def test_no_token_or_a_wrong_one_is_unauthenticated(pki, secure_server) -> None:
    host, address = secure_server
    missing = raw_plan(pki, address)
    assert isinstance(missing, grpc.RpcError) and missing.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "requires a token" in missing.details()
    for metadata in ((("authorization", "Bearer wrong-token-0123456789abcdef"),),
                     (("authorization", TOKEN),),  # without "Bearer "
                     (("authorization", "Bearer " + TOKEN[:-1]),),
                     (("authorization", "Bearer " + TOKEN), ("authorization", "Bearer " + TOKEN))):
        wrong = raw_plan(pki, address, metadata)
        assert isinstance(wrong, grpc.RpcError) and wrong.code() == grpc.StatusCode.UNAUTHENTICATED, metadata
        assert TOKEN not in wrong.details()
    assert raw_plan(pki, address, (("authorization", "Bearer " + TOKEN),)) == heuristic_plan(plan_request())
    # PlannerClient does not hide a refusal behind the heuristic: it is a configuration error.
    for token in (None, "another-token-0123456789"):
        with PlannerClient(address, client_security(pki, token)) as client:
            with pytest.raises(PermissionError, match="UNAUTHENTICATED|token"):
                client.plan(plan_request(), TIMEOUT_S)


def test_the_health_service_stays_open(pki, secure_server) -> None:
    _, address = secure_server
    credentials = grpc.ssl_channel_credentials(root_certificates=pki["cert"].read_bytes())
    with grpc.secure_channel(address, credentials) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=PLANNER_SERVICE_NAME), timeout=TIMEOUT_S)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_plaintext_clients_get_nothing_from_a_tls_server(secure_server) -> None:
    _, address = secure_server
    with grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as raised:
            planner_pb2_grpc.PlannerStub(channel).Plan(
                plan_request(), timeout=3.0, metadata=(("authorization", "Bearer " + TOKEN),))
    assert raised.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_replicas_share_one_certificate_through_the_server_name(pki) -> None:
    """Two replicas, one certificate: the client list goes round-robin over TLS, verifying the name
    the certificate carries (PLANNER_TLS_SERVER_NAME)."""
    hosts = [PlannerServer() for _ in range(2)]
    addresses = [h.start("heuristic", "127.0.0.1", 0, token_file=str(pki["token"]), tls_cert=str(pki["cert"]),
                         tls_key=str(pki["key"])) for h in hosts]
    try:
        security = client_security(pki, server_name=SERVER_NAME)
        with PlannerClient(",".join(addresses), security) as client:
            client.wait_ready(TIMEOUT_S)
            for _ in range(4):
                _, fell_back = client.plan(plan_request(), TIMEOUT_S)
                assert not fell_back
        assert all(h.stats()["rpcs_plan"] >= 1 for h in hosts)
    finally:
        for h in hosts:
            h.stop()


def test_both_ends_read_the_environment_as_ray_actors_do(pki, monkeypatch) -> None:
    monkeypatch.setenv("PLANNER_TOKEN_FILE", str(pki["token"]))
    monkeypatch.setenv("PLANNER_TLS_CERT", str(pki["cert"]))
    monkeypatch.setenv("PLANNER_TLS_KEY", str(pki["key"]))
    monkeypatch.setenv("PLANNER_TLS_CA", str(pki["cert"]))
    monkeypatch.delenv("PLANNER_TOKEN", raising=False)
    host = PlannerServerActor()
    address = host.start("heuristic")
    try:
        with connect_planner(address) as client:
            _, fell_back = client.plan(plan_request(), TIMEOUT_S)
            assert not fell_back
        missing = raw_plan(pki, address)
        assert missing.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        host.stop()


# --- configuration errors and secrecy -------------------------------------------------------------


def test_bad_settings_fail_with_messages_that_name_the_source_not_the_token(pki, tmp_path) -> None:
    with pytest.raises(ValueError, match="not both"):
        token_from_env({"PLANNER_TOKEN": TOKEN, "PLANNER_TOKEN_FILE": str(pki["token"])})
    with pytest.raises(ValueError, match="cannot read the planner token file .*missing"):
        token_from_env({"PLANNER_TOKEN_FILE": str(tmp_path / "missing")})
    with pytest.raises(ValueError, match=r"\$PLANNER_TOKEN has 5 characters; use at least 16"):
        token_from_env({"PLANNER_TOKEN": "short"})
    with pytest.raises(ValueError, match="both a certificate and its key"):
        ServerSecurity.from_env(env={}, tls_cert=str(pki["cert"]))
    with pytest.raises(ValueError, match="not a PEM file"):
        ServerSecurity.from_env(env={}, tls_cert=str(pki["token"]), tls_key=str(pki["key"]))
    assert token_from_env({"PLANNER_TOKEN": TOKEN}) == TOKEN
    assert token_from_env({}) is None
    for security in (ServerSecurity.from_env(env={"PLANNER_TOKEN": TOKEN}), client_security(pki)):
        assert TOKEN not in repr(security) and "BEGIN" not in repr(security)


def test_the_token_never_shows_in_logs_or_in_ps(pki, caplog) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANNER_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "llm_server", "--port", "0", "--token-file", str(pki["token"]),
         "--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"])],
        cwd=REPO_ROOT, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        address = process.stdout.readline().split()[3]
        caplog.set_level(logging.DEBUG)
        with PlannerClient(address, client_security(pki)) as client:
            client.wait_ready(TIMEOUT_S)
            assert not client.plan(plan_request(), TIMEOUT_S)[1]
        for metadata in ((), (("authorization", "Bearer " + TOKEN + "x"),)):  # refusals are logged
            assert raw_plan(pki, address, metadata).code() == grpc.StatusCode.UNAUTHENTICATED
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().decode()
        ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True, timeout=10).stdout \
            if shutil.which("ps") else ""
    finally:
        process.terminate()
        out, err = process.communicate(timeout=15)
    assert "--token-file" in cmdline and TOKEN not in cmdline and TOKEN not in ps
    assert "refused a /recrl.planner.v3.Planner/Plan call without a token" in err
    assert "with a wrong token" in err and "TLS, token required" in err
    assert TOKEN not in out + err
    assert all(TOKEN not in record.getMessage() for record in caplog.records)


def test_a_token_without_tls_off_loopback_is_warned_about(caplog) -> None:
    caplog.set_level(logging.WARNING)
    ServerSecurity(token=TOKEN).warn_if_exposed("10.1.2.3")
    ServerSecurity().warn_if_exposed("0.0.0.0")
    ServerSecurity(token=TOKEN).warn_if_exposed("127.0.0.1")
    text = caplog.text
    assert "token travels in clear text" in text and "requires no token" in text
    assert TOKEN not in text and text.count("10.1.2.3") == 1
    caplog.clear()
    ClientSecurity(token=TOKEN).open_channel("10.1.2.3:5", []).close()
    ClientSecurity(token=TOKEN).open_channel("ipv4:127.0.0.1:5,127.0.0.1:6", []).close()
    assert caplog.text.count("clear text") == 1 and TOKEN not in caplog.text


def test_client_settings_come_from_the_environment(pki) -> None:
    security = ClientSecurity.from_env({"PLANNER_TLS_CA": str(pki["cert"]), "PLANNER_TOKEN_FILE": str(pki["token"]),
                                        "PLANNER_TLS_SERVER_NAME": SERVER_NAME})
    assert security.tls and security.server_name == SERVER_NAME
    assert security.metadata() == (("authorization", "Bearer " + TOKEN),)
    assert security.describe() == "TLS, token"
    assert ClientSecurity.from_env({}).metadata() == () and not ClientSecurity.from_env({}).tls
    with pytest.raises(ValueError, match=r"\$PLANNER_TLS_CA.*not a PEM file"):
        ClientSecurity.from_env({"PLANNER_TLS_CA": str(pki["token"])})
