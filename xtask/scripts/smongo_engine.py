"""A MongoDB-wire-compatible engine for tests and `cargo xtask dev` on machines without mongod.

Runs smongo (PyPI) with SCRAM-SHA-256 authentication required, and seeds one root user so the
first client can log in (smongo has no localhost exception). Its data directory is wiped at
every start: users are not reloaded by smongo, and hepdb's test setup bootstraps the
provisioner again anyway. Production and the compose stack use real MongoDB.

usage: python3 smongo_engine.py --port 27017 --dir DIR --root-user root --root-password PW
       [--tls-cert server.crt --tls-key server.key]   (TLS only, for the TLS tests)
"""

import argparse
import base64
import hashlib
import hmac
import os
import shutil
import signal
import threading

from bson import ObjectId
from smongo.wire import WireServer
from smongo.wire.commands import users


def scram_sha256(password: str, iterations: int = 15000) -> dict:
    """MongoDB's stored SCRAM-SHA-256 credentials (RFC 7677; SASLprep is the identity for ASCII)."""
    salt = os.urandom(28)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return {
        "iterationCount": iterations,
        "salt": base64.b64encode(salt).decode(),
        "storedKey": base64.b64encode(hashlib.sha256(client_key).digest()).decode(),
        "serverKey": base64.b64encode(
            hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        ).decode(),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=27017)
    p.add_argument("--dir", required=True)
    p.add_argument("--root-user", default="root")
    p.add_argument("--root-password", required=True)
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    args = p.parse_args()

    shutil.rmtree(args.dir, ignore_errors=True)
    os.makedirs(args.dir)
    server = WireServer(
        args.dir,
        "127.0.0.1",
        args.port,
        auth_required=True,
        tls_cert_file=args.tls_cert,
        tls_key_file=args.tls_key,
    )
    with users._USER_STORE_LOCK:
        users._USER_STORE[f"admin.{args.root_user}"] = {
            "_id": f"admin.{args.root_user}",
            "userId": ObjectId(),
            "user": args.root_user,
            "db": "admin",
            "roles": [{"role": "root", "db": "admin"}],
            "mechanisms": ["SCRAM-SHA-256"],
            "credentials": {"SCRAM-SHA-256": scram_sha256(args.root_password)},
        }
    server.start()  # serve_forever() would hold the GIL and hang every connection
    print(f"smongo engine on 127.0.0.1:{args.port}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    server.stop()


if __name__ == "__main__":
    main()
