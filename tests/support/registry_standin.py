"""The smallest stand-in for a Confluent Schema Registry: the documented REST endpoints that
confluent-kafka's ``SchemaRegistryClient`` and ``AvroSerializer`` call, on a real socket.

No Schema Registry server can be installed here (the Java one needs a JVM artifact repository,
Karapace is not on the package index), so the tests speak to this one. It serves:

    GET  /schemas/ids/{id}                    POST /subjects/{subject}/versions   (register)
    POST /subjects/{subject}          (lookup) GET  /subjects/{subject}/versions[/{version|latest}]
    GET  /subjects                             PUT|GET /config[/{subject}]

with HTTP basic auth when ``credentials`` are given, over TLS when ``tls`` files are. Ids are global and one schema text has one id,
as in the real registry. It stores the compatibility level but does not enforce it (shopmail's
reader decides compatibility by Avro resolution, which is what the tests exercise).
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlparse


class RegistryStandIn:
    def __init__(self, credentials: tuple[str, str] | None = None, tls: tuple[str, str] | None = None) -> None:
        self.credentials = credentials
        self.tls = tls  # (certificate PEM, key PEM): serve HTTPS
        self.schemas: list[str] = []  # id - 1 → schema text
        self.subjects: dict[str, list[int]] = {}  # subject → ids by version
        self.compatibility: dict[str, str] = {}  # subject ("" = global) → level
        self.requests: list[str] = []  # "GET /schemas/ids/1", …
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> "RegistryStandIn":
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                if standin.credentials is not None:
                    expected = "Basic " + base64.b64encode(":".join(standin.credentials).encode()).decode()
                    if self.headers.get("Authorization") != expected:
                        return self._answer(401, {"error_code": 401, "message": "Unauthorized"})
                path = unquote(urlparse(self.path).path).rstrip("/")
                with standin.lock:
                    standin.requests.append(f"{method} {path}")
                    status, answer = standin.route(method, path, body)
                self._answer(status, answer)

            def do_GET(self) -> None:  # noqa: N802
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

            def do_PUT(self) -> None:  # noqa: N802
                self._handle("PUT")

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the socket: the registry is down (``start()`` brings it back on the same port)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ---- the REST API -------------------------------------------------------------------------

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if m := re.fullmatch(r"/schemas/ids/(\d+)", path):
            schema_id = int(m[1])
            if not 0 < schema_id <= len(self.schemas):
                return 404, {"error_code": 40403, "message": f"Schema {schema_id} not found"}
            return 200, {"schema": self.schemas[schema_id - 1]}
        if path == "/subjects" and method == "GET":
            return 200, sorted(self.subjects)
        if m := re.fullmatch(r"/subjects/([^/]+)/versions", path):
            if method == "POST":
                return 200, {"id": self._register(m[1], body["schema"])}
            if m[1] not in self.subjects:
                return 404, {"error_code": 40401, "message": f"Subject '{m[1]}' not found."}
            return 200, list(range(1, len(self.subjects[m[1]]) + 1))
        if m := re.fullmatch(r"/subjects/([^/]+)/versions/(\w+)", path):
            ids = self.subjects.get(m[1])
            if not ids:
                return 404, {"error_code": 40401, "message": f"Subject '{m[1]}' not found."}
            version = len(ids) if m[2] == "latest" else int(m[2])
            if not 0 < version <= len(ids):
                return 404, {"error_code": 40402, "message": f"Version {m[2]} not found."}
            return 200, self._registered(m[1], version)
        if (m := re.fullmatch(r"/subjects/([^/]+)", path)) and method == "POST":
            ids = self.subjects.get(m[1], [])
            for version, schema_id in enumerate(ids, 1):
                if _same(self.schemas[schema_id - 1], body["schema"]):
                    return 200, self._registered(m[1], version)
            return 404, {"error_code": 40403 if ids else 40401, "message": "Schema not found"}
        if m := re.fullmatch(r"/config(?:/([^/]+))?", path):
            subject = m[1] or ""
            if method == "PUT":
                self.compatibility[subject] = body["compatibility"]
                return 200, {"compatibility": body["compatibility"]}
            level = self.compatibility.get(subject) or self.compatibility.get("", "BACKWARD")
            return 200, {"compatibilityLevel": level}
        return 404, {"error_code": 404, "message": f"{method} {path} is not served by the stand-in"}

    def _register(self, subject: str, schema: str) -> int:
        for i, existing in enumerate(self.schemas, 1):
            if _same(existing, schema):
                schema_id = i
                break
        else:
            self.schemas.append(schema)
            schema_id = len(self.schemas)
        ids = self.subjects.setdefault(subject, [])
        if schema_id not in ids:
            ids.append(schema_id)
        return schema_id

    def _registered(self, subject: str, version: int) -> dict[str, Any]:
        schema_id = self.subjects[subject][version - 1]
        return {"subject": subject, "version": version, "id": schema_id, "schema": self.schemas[schema_id - 1]}


def _same(a: str, b: str) -> bool:
    return bool(json.loads(a) == json.loads(b))
