"""Send bursts of NTP requests, several at once from one socket, and report where each reply
came from: the far end of a test's private network (tests/netns.py) runs it (``nsenter``), as
another host would, to see that a wildcard server answers a batch from the address each request
was sent to (tests/interop/test_reply_source_netns.py).

``python tests/reply_burst.py KEY_FILE BURST...``; each BURST is ``ADDRESS,PORT,KIND,COUNT``
(KIND ``plain``; ``nts`` with cookies sealed by the server's own key file, as its NTS-KE
would give them: the test is about the replies' source, not key exchange; ``nak`` with
cookies sealed by a key of our own, which the server answers with NTS NAKs).  Prints one JSON
list: for each burst, [[reply source IP, stratum, reply length], ...]; a burst waits at most
2 s for its replies (a rate limit may leave some unanswered).
"""

from __future__ import annotations

import json
import select
import socket
import sys
import time
from pathlib import Path

from tsyncd.nts.client import NtsSession
from tsyncd.nts.cookie import CookieContents, load_keyset, new_keyset
from tsyncd.wire.ntp import NtpPacket, decode_ntp, encode_ntp

_AES_SIV_CMAC_256 = 15
_WAIT_S = 2.0
_ROTATION_S = 86400  # [keyset] key-rotation-interval's default


def _requests(kind: str, count: int, key_file: Path) -> list[bytes]:
    plain = [encode_ntp(NtpPacket(transmit_ts=0x1234_5678_0000 + n)) for n in range(count)]
    if kind == "plain":
        return plain
    if kind == "nts":
        keys = load_keyset(key_file, _ROTATION_S, time.time(), create=False)
    else:
        keys = new_keyset(time.time(), _ROTATION_S)
    contents = CookieContents(aead_id=_AES_SIV_CMAC_256, c2s=b"c" * 32, s2c=b"s" * 32)
    out = []
    for request in plain:
        session = NtsSession(_AES_SIV_CMAC_256, contents.c2s, contents.s2c, [keys.seal(contents)])
        sealed = session.protect(request)
        assert sealed is not None
        out.append(sealed)
    return out


def burst(address: str, port: int, requests: list[bytes]) -> list[tuple[str, int, int]]:
    """Send every request at once; (source, stratum, length) of each reply within ``_WAIT_S``."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    got: list[tuple[str, int, int]] = []
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        for request in requests:
            sock.sendto(request, (address, port))
        deadline = time.monotonic() + _WAIT_S
        while len(got) < len(requests):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([sock], [], [], left)[0]:
                break
            data, source = sock.recvfrom(1024)
            got.append((str(source[0]), decode_ntp(data).stratum, len(data)))
    return got


def main(argv: list[str]) -> None:
    key_file = Path(argv[0])
    out = []
    for spec in argv[1:]:
        address, port, kind, count = spec.split(",")
        out.append(burst(address, int(port), _requests(kind, int(count), key_file)))
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
