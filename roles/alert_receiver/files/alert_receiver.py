"""Lab only: an Alertmanager webhook sink that appends each POST body, one JSON line, to a file.

Shows that a firing alert leaves Alertmanager and arrives somewhere (molecule's default scenario reads
the file). Standard library only: it runs with Debian's python3, outside the apply layer's release.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MAX_BODY_BYTES = 1_000_000


def handler_for(store: Path) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY_BYTES:
                self.send_error(413 if length else 411)
                return
            try:
                body = json.loads(self.rfile.read(length))
            except json.JSONDecodeError as error:
                self.send_error(400, f"not JSON: {error}")
                return
            with lock, store.open("a", encoding="utf-8") as sink:
                sink.write(json.dumps({"path": self.path, "body": body}) + "\n")
            self.send_response(200)
            self.end_headers()

    return Receiver


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9099)
    parser.add_argument("--store", type=Path, required=True, help="file each notification is appended to")
    args = parser.parse_args()
    try:
        server = ThreadingHTTPServer((args.host, args.port), handler_for(args.store))
    except OSError as error:
        print(f"cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
