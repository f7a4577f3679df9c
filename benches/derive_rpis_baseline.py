#!/usr/bin/env python3
"""Baseline for the `derive_rpis` benchmark: the same work in Python with `cryptography`
(OpenSSL underneath): TEK -> RPIK by HKDF-SHA256 -> the 144 RPIs of a day by AES-128-ECB,
one cipher context per key, all 144 blocks in one call.

Run: python3 benches/derive_rpis_baseline.py [--seconds S] [--json]
(`pip install cryptography` if missing). scripts/bench runs it beside the criterion bench and
prints the ratio. Checked against the official test vector before measuring.
"""
import argparse
import json
import os
import struct
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

START_ENIN = 2642976
PADDED = b"".join(b"EN-RPI" + bytes(6) + struct.pack("<I", START_ENIN + i) for i in range(144))


def rpis(tek: bytes) -> bytes:
    rpik = HKDF(algorithm=hashes.SHA256(), length=16, salt=None, info=b"EN-RPIK").derive(tek)
    encryptor = Cipher(algorithms.AES(rpik), modes.ECB()).encryptor()
    return encryptor.update(PADDED) + encryptor.finalize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    # The official vector: TEK 75c734c6..., first RPI 8be6cd37...
    first = rpis(bytes.fromhex("75c734c6dd1a782de7a965da5eb93125"))[:16]
    assert first.hex() == "8be6cd371c5c891604bfbe49df845096", first.hex()

    keys = [os.urandom(16) for _ in range(1024)]
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        for tek in keys:
            rpis(tek)
        done += len(keys)
    elapsed = time.perf_counter() - start
    rate = done / elapsed
    if args.json:
        print(json.dumps({"keys_per_second": rate, "keys": done, "seconds": elapsed}))
    else:
        print(f"python cryptography: {rate:,.0f} keys/s (TEK -> 144 RPIs), one core")


if __name__ == "__main__":
    main()
