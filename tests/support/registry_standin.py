"""The smallest stand-in for a Confluent Schema Registry: the documented REST endpoints that
confluent-kafka's ``SchemaRegistryClient`` and ``AvroSerializer`` call, on a real socket.

No Schema Registry server can be installed here (the Java one needs a JVM artifact repository,
Karapace is not on the package index), so the tests speak to this one. It serves:

    GET  /schemas/ids/{id}                    POST /subjects/{subject}/versions   (register)
    POST /subjects/{subject}          (lookup) GET  /subjects/{subject}/versions[/{version|latest}]
    GET  /subjects                             PUT|GET /config[/{subject}]

with HTTP basic auth when ``credentials`` are given, over TLS when ``tls`` files are. Ids are global
and one schema text has one id, as in the real registry. Where shopmail relies on the documented
answers, it gives them: 422 (42201) for schema text that is not an Avro schema (unless it declares
``references``, which are stored and returned but not resolved); 40408 from ``GET /config/{subject}``
for a subject without a level of its own; 409 when a new version is not BACKWARD compatible with the
latest one, under any level but NONE.

What it does not do (README "Tested against a stand-in"): its compatibility check is a small part of
the real one (the record's full name must stay the same, and every field the new version adds must
have a default; types, enums, aliases and FORWARD/FULL/TRANSITIVE levels are not checked); no
deletes, modes, contexts, normalisation, Protobuf or JSON Schema; no ``defaultToGlobal``.
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

import fastavro


class RegistryStandIn:
    def __init__(self, credentials: tuple[str, str] | None = None, tls: tuple[str, str] | None = None) -> None:
        self.credentials = credentials
        self.tls = tls  # (certificate PEM, key PEM): serve HTTPS
        self.schemas: list[str] = []  # id - 1 → schema text
        self.subjects: dict[str, list[int]] = {}  # subject → ids by version
        self.compatibility: dict[str, str] = {}  # subject ("" = global) → level
        self.references: dict[int, list[Any]] = {}  # id → the references it was registered with
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
            out = {"schema": self.schemas[schema_id - 1]}
            if schema_id in self.references:
                out["references"] = self.references[schema_id]
            return 200, out
        if path == "/subjects" and method == "GET":
            return 200, sorted(self.subjects)
        if m := re.fullmatch(r"/subjects/([^/]+)/versions", path):
            if method == "POST":
                return self._post_version(m[1], body)
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
            if subject and subject not in self.compatibility:
                return 404, {"error_code": 40408, "message": f"Subject '{subject}' does not have "
                                                             f"subject-level compatibility configured"}
            return 200, {"compatibilityLevel": self.compatibility.get(subject, "BACKWARD")}
        return 404, {"error_code": 404, "message": f"{method} {path} is not served by the stand-in"}

    def _post_version(self, subject: str, body: dict[str, Any]) -> tuple[int, Any]:
        text, references = body["schema"], body.get("references") or []
        if not references:
            try:
                fastavro.parse_schema(json.loads(text))
            except Exception as exc:  # noqa: BLE001 - what fastavro says is the message
                return 422, {"error_code": 42201, "message": f"Invalid schema: {exc}"}
        ids = self.subjects.get(subject, [])
        known = any(_same(self.schemas[i - 1], text) for i in ids)
        level = self.compatibility.get(subject, self.compatibility.get("", "BACKWARD"))
        if ids and not known and level != "NONE" and not references:
            problem = _not_backward(json.loads(self.schemas[ids[-1] - 1]), json.loads(text))
            if problem:
                return 409, {"error_code": 409, "message": f"Schema being registered is incompatible with an "
                                                           f"earlier schema for subject \"{subject}\": {problem}"}
        schema_id = self._register(subject, text)
        if references:
            self.references[schema_id] = references
        return 200, {"id": schema_id}

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
        out = {"subject": subject, "version": version, "id": schema_id, "schema": self.schemas[schema_id - 1]}
        if schema_id in self.references:
            out["references"] = self.references[schema_id]
        return out


def _same(a: str, b: str) -> bool:
    return bool(json.loads(a) == json.loads(b))


def _not_backward(old: dict[str, Any], new: dict[str, Any]) -> str:
    """Why ``new`` cannot read what ``old`` wrote, as far as the stand-in checks; "" if it can."""
    def fullname(s: dict[str, Any]) -> str:
        name = str(s.get("name", ""))
        return name if "." in name or not s.get("namespace") else f"{s['namespace']}.{name}"
    if fullname(old) != fullname(new):
        return f"the record is {fullname(new)}, the latest version's is {fullname(old)}"
    had = {f["name"] for f in old.get("fields", [])}
    added = [f["name"] for f in new.get("fields", []) if f["name"] not in had and "default" not in f]
    return f"new field(s) without a default: {', '.join(added)}" if added else ""
