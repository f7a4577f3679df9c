#!/usr/bin/python3
"""Independent reference implementation of OpenTrace (BlueTrace v2) TempIDs for the tests.

Written from the OpenTrace backend's description (../shared/testdata/bluetrace.md:
opentrace-cloud-functions getTempIDs.ts / CustomEncrypter.ts), on OpenSSL through Python's
`cryptography` (Debian: python3-cryptography), sharing no code with src/bluetrace.rs.

    tempid_ref.py encrypt KEY_B64 UID_B64 START EXPIRY [IV_HEX]  -> TempID (base64)
    tempid_ref.py decrypt KEY_B64 TEMPID_B64                     -> "UID_B64 START EXPIRY"
    tempid_ref.py payload TEMPID_B64 ORG MODEL                   -> the v2 GATT read payload (JSON)
    tempid_ref.py uid SEED                                        -> a 21-byte UID (base64) from SEED

TempID = base64(ciphertext || iv || tag); plaintext = uid (21 bytes) || start || expiry, both
big-endian signed 32-bit; AES-256-GCM, 16-byte IV, no associated data.
"""

import base64
import hashlib
import json
import os
import struct
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def encrypt(key: bytes, uid: bytes, start: int, expiry: int, iv: bytes) -> str:
    assert len(key) == 32 and len(uid) == 21 and len(iv) == 16
    plaintext = uid + struct.pack(">ii", start, expiry)
    sealed = AESGCM(key).encrypt(iv, plaintext, None)  # ciphertext || tag
    ciphertext, tag = sealed[:-16], sealed[-16:]
    return base64.b64encode(ciphertext + iv + tag).decode()


def decrypt(key: bytes, tempid: str):
    raw = base64.b64decode(tempid)
    ciphertext, iv, tag = raw[:-32], raw[-32:-16], raw[-16:]
    plaintext = AESGCM(key).decrypt(iv, ciphertext + tag, None)
    uid, (start, expiry) = plaintext[:21], struct.unpack(">ii", plaintext[21:])
    return base64.b64encode(uid).decode(), start, expiry


def main(argv):
    if len(argv) >= 6 and argv[1] == "encrypt":
        iv = bytes.fromhex(argv[6]) if len(argv) > 6 else os.urandom(16)
        print(encrypt(base64.b64decode(argv[2]), base64.b64decode(argv[3]),
                      int(argv[4]), int(argv[5]), iv))
    elif len(argv) == 4 and argv[1] == "decrypt":
        print(*decrypt(base64.b64decode(argv[2]), argv[3]))
    elif len(argv) == 5 and argv[1] == "payload":
        print(json.dumps({"v": 2, "id": argv[2], "o": argv[3], "mp": argv[4]}))
    elif len(argv) == 3 and argv[1] == "uid":
        print(base64.b64encode(hashlib.sha256(argv[2].encode()).digest()[:21]).decode())
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
