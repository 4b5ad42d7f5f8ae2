"""Is a Kafka broker really serving? Used by scripts/kafka.sh for readiness and status.

Standard library only, so it runs under any python3 before the project's virtualenv exists.
It speaks the Kafka protocol directly: an open port only proves the JVM bound a socket, whereas
a Metadata answer listing a broker and a controller proves the KRaft quorum is up and the broker
is registered, i.e. clients can work.

    python3 infra/kafka/probe.py HOST:PORT [--timeout S] [--api-versions]

It logs in the way the services do, from the same environment variables: with
KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT or SASL_SSL it authenticates with SASL/SCRAM (or PLAIN)
as KAFKA_USERNAME / KAFKA_PASSWORD (KAFKA_SASL_MECHANISM, default SCRAM-SHA-256); with SSL or
SASL_SSL it speaks TLS (KAFKA_SSL_CAFILE, default the system's CAs).

Exit 0 and print "cluster=<id> brokers=<n> controller=<id>" when ready, exit 1 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import os
import socket
import ssl
import struct
import sys

API_VERSIONS = 18
METADATA = 3
SASL_HANDSHAKE = 17
SASL_AUTHENTICATE = 36
# Metadata v4..v7 share the request layout used below and the response prefix parsed below
# (v8 adds fields, v9 switches to the flexible encoding).
METADATA_VERSIONS = range(4, 8)

API_NAMES = {
    0: "Produce",
    1: "Fetch",
    2: "ListOffsets",
    3: "Metadata",
    8: "OffsetCommit",
    9: "OffsetFetch",
    10: "FindCoordinator",
    11: "JoinGroup",
    22: "InitProducerId",
    24: "AddPartitionsToTxn",
    25: "AddOffsetsToTxn",
    26: "EndTxn",
    28: "TxnOffsetCommit",
}


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return int(value)

    def string(self) -> str | None:
        length = self.take(">h")
        if length < 0:
            return None
        value = self.data[self.pos : self.pos + length].decode()
        self.pos += length
        return value


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        chunks += chunk
    return bytes(chunks)


def _call(sock: socket.socket, api_key: int, version: int, correlation: int, body: bytes) -> Reader:
    client_id = b"mailctl-probe"
    header = struct.pack(">hhih", api_key, version, correlation, len(client_id)) + client_id
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    reader = Reader(_recv_exact(sock, size))
    if reader.take(">i") != correlation:
        raise ConnectionError("response does not match the request")
    return reader


def api_versions(sock: socket.socket) -> dict[int, tuple[int, int]]:
    # ApiVersions v0 is accepted by every broker version, whatever else it dropped.
    reader = _call(sock, API_VERSIONS, 0, 1, b"")
    error = reader.take(">h")
    if error:
        raise ConnectionError(f"ApiVersions error code {error}")
    versions = {}
    for _ in range(reader.take(">i")):
        key, low, high = reader.take(">h"), reader.take(">h"), reader.take(">h")
        versions[key] = (low, high)
    return versions


def metadata(sock: socket.socket, versions: dict[int, tuple[int, int]]) -> tuple[str, int, int]:
    low, high = versions.get(METADATA, (0, -1))
    usable = [v for v in METADATA_VERSIONS if low <= v <= high]
    if not usable:
        raise ConnectionError(f"broker offers Metadata v{low}..v{high}, probe speaks v4..v7")
    # An empty topic list asks for brokers and controller only; no topic is auto-created.
    body = struct.pack(">i?", 0, False)
    reader = _call(sock, METADATA, usable[-1], 2, body)
    reader.take(">i")  # throttle_time_ms
    brokers = reader.take(">i")
    for _ in range(brokers):
        reader.take(">i")  # node_id
        reader.string()  # host
        reader.take(">i")  # port
        reader.string()  # rack
    cluster_id = reader.string() or ""
    controller_id = reader.take(">i")
    return cluster_id, brokers, controller_id


def _bytes(value: bytes) -> bytes:
    return struct.pack(">i", len(value)) + value


def _read_bytes(reader: Reader) -> bytes:
    length = reader.take(">i")
    value = reader.data[reader.pos : reader.pos + max(length, 0)]
    reader.pos += max(length, 0)
    return value


def _authenticate_step(sock: socket.socket, correlation: int, payload: bytes) -> bytes:
    # SaslAuthenticate v1 (non-flexible): auth_bytes in; error, message, auth_bytes, lifetime out.
    reader = _call(sock, SASL_AUTHENTICATE, 1, correlation, _bytes(payload))
    error = reader.take(">h")
    message = reader.string()
    if error:
        raise ConnectionError(f"authentication failed (error {error}: {message})")
    return _read_bytes(reader)


def sasl_login(sock: socket.socket, mechanism: str, username: str, password: str) -> None:
    """SaslHandshake v1, then SCRAM-SHA-256/512 (RFC 5802) or PLAIN over SaslAuthenticate."""
    name = mechanism.encode()
    reader = _call(sock, SASL_HANDSHAKE, 1, 10, struct.pack(">h", len(name)) + name)
    error = reader.take(">h")
    if error:
        raise ConnectionError(f"the broker refused SASL mechanism {mechanism} (error {error})")
    if mechanism == "PLAIN":
        _authenticate_step(sock, 11, b"\0" + username.encode() + b"\0" + password.encode())
        return
    digest = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}[mechanism]
    nonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = f"n={username},r={nonce}"
    server_first = _authenticate_step(sock, 11, f"n,,{first_bare}".encode()).decode()
    fields = dict(item.split("=", 1) for item in server_first.split(","))
    if not fields["r"].startswith(nonce):
        raise ConnectionError("SCRAM: the server's nonce does not extend ours")
    salted = hashlib.pbkdf2_hmac(
        digest, password.encode(), base64.b64decode(fields["s"]), int(fields["i"])
    )
    client_key = hmac.new(salted, b"Client Key", digest).digest()
    stored_key = hashlib.new(digest, client_key).digest()
    without_proof = f"c=biws,r={fields['r']}"
    auth_message = f"{first_bare},{server_first},{without_proof}".encode()
    signature = hmac.new(stored_key, auth_message, digest).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    final = f"{without_proof},p={base64.b64encode(proof).decode()}"
    server_final = _authenticate_step(sock, 12, final.encode()).decode()
    server_key = hmac.new(salted, b"Server Key", digest).digest()
    expected = base64.b64encode(hmac.new(server_key, auth_message, digest).digest()).decode()
    if server_final != f"v={expected}":
        raise ConnectionError("SCRAM: the server's signature does not verify")


def connect(host: str, port: int, timeout: float) -> socket.socket:
    """A connection logged in as the environment says (see the module docstring)."""
    protocol = os.environ.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        if protocol in ("SSL", "SASL_SSL"):
            context = ssl.create_default_context(cafile=os.environ.get("KAFKA_SSL_CAFILE") or None)
            sock = context.wrap_socket(sock, server_hostname=host)
        if protocol.startswith("SASL_"):
            sasl_login(
                sock,
                os.environ.get("KAFKA_SASL_MECHANISM", "SCRAM-SHA-256"),
                os.environ.get("KAFKA_USERNAME", ""),
                os.environ.get("KAFKA_PASSWORD", ""),
            )
    except BaseException:
        sock.close()
        raise
    return sock


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bootstrap", help="HOST:PORT")
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument(
        "--api-versions", action="store_true", help="also print the broker's API version ranges"
    )
    args = parser.parse_args()
    host, _, port = args.bootstrap.split(",")[0].rpartition(":")
    try:
        with connect(host, int(port), args.timeout) as sock:
            versions = api_versions(sock)
            cluster_id, brokers, controller_id = metadata(sock, versions)
    except (OSError, ValueError, KeyError, struct.error) as error:
        print(f"not ready: {error}", file=sys.stderr)
        return 1
    if args.api_versions:
        for key, name in API_NAMES.items():
            low, high = versions.get(key, (None, None))
            shown = f"v{low}..v{high}" if low is not None else "absent"
            print(f"{name}({key}): {shown}")
    if brokers < 1 or controller_id < 0:
        print(f"not ready: brokers={brokers} controller={controller_id}", file=sys.stderr)
        return 1
    print(f"cluster={cluster_id} brokers={brokers} controller={controller_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
