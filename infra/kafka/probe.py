"""Is a Kafka broker really serving? Used by scripts/kafka.sh for readiness and status.

Standard library only, so it runs under any python3 before the project's virtualenv exists.
It speaks the Kafka protocol directly: an open port only proves the JVM bound a socket, whereas
a Metadata answer listing a broker and a controller proves the KRaft quorum is up and the broker
is registered, i.e. clients can work.

    python3 infra/kafka/probe.py HOST:PORT [--timeout S] [--api-versions]

Exit 0 and print "cluster=<id> brokers=<n> controller=<id>" when ready, exit 1 otherwise.
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys

API_VERSIONS = 18
METADATA = 3
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
        with socket.create_connection((host, int(port)), timeout=args.timeout) as sock:
            versions = api_versions(sock)
            cluster_id, brokers, controller_id = metadata(sock, versions)
    except (OSError, ValueError, struct.error) as error:
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
