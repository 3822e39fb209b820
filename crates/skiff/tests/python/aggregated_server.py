"""An extension API server for tests/webhooks.rs: the group
wardle.skiff.test/v1 with one resource, flunders, served over HTTPS (the
test's CA) to clients with a certificate from the CA the aggregator's
extension-apiserver-authentication ConfigMap names, whose common name it
allows. Each answer says who the aggregator said asked.

Usage: aggregated_server.py CERT KEY CLIENT_CA ALLOWED_NAME PORT_FILE
"""

import json
import os
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GV = "wardle.skiff.test/v1"
ALLOWED = sys.argv[4]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def flunder(self, ns, name):
        return {"apiVersion": GV, "kind": "Flunder", "metadata": {"name": name, "namespace": ns, "creationTimestamp": "2026-01-01T00:00:00Z",
                "annotations": {"remote-user": self.headers.get("X-Remote-User", ""), "remote-groups": ",".join(self.headers.get_all("X-Remote-Group") or [])}}}

    def do_GET(self):
        cert = self.connection.getpeercert() or {}
        cn = dict(x[0] for x in cert.get("subject", ())).get("commonName")
        if cn != ALLOWED:
            return self.answer(401, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 401, "reason": "Unauthorized", "message": f"client {cn!r} not allowed"})
        parts = [p for p in self.path.split("?")[0].split("/") if p]
        if parts == ["apis", "wardle.skiff.test", "v1"]:
            return self.answer(200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GV, "resources": [
                {"name": "flunders", "singularName": "flunder", "namespaced": True, "kind": "Flunder", "verbs": ["get", "list"], "shortNames": ["fl"]}]})
        if parts == ["openapi", "v3", "apis", "wardle.skiff.test", "v1"]:
            gvk = [{"group": "wardle.skiff.test", "version": "v1", "kind": "Flunder"}]
            ref = {"$ref": "#/components/schemas/test.skiff.wardle.v1.Flunder"}
            get = {"operationId": "readFlunder", "x-kubernetes-action": "get", "x-kubernetes-group-version-kind": gvk[0],
                   "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}}}
            paths = {"/apis/wardle.skiff.test/v1/namespaces/{namespace}/flunders/{name}": {"get": get}}
            return self.answer(200, {"openapi": "3.0.0", "info": {"title": "wardle", "version": "v1"}, "paths": paths,
                "components": {"schemas": {"test.skiff.wardle.v1.Flunder": {"type": "object", "description": "A flunder, served by the wardle server.",
                    "x-kubernetes-group-version-kind": gvk, "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                    "metadata": {"type": "object"}, "spec": {"type": "object", "description": "What the flunder is made of."}}}}}})
        if len(parts) == 6 and parts[3] == "namespaces" and parts[5] == "flunders":
            return self.answer(200, {"kind": "FlunderList", "apiVersion": GV, "metadata": {"resourceVersion": "1"}, "items": [self.flunder(parts[4], "flunder-1")]})
        if len(parts) == 7 and parts[3] == "namespaces" and parts[5] == "flunders":
            return self.answer(200, self.flunder(parts[4], parts[6]))
        self.answer(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound", "message": "the server could not find the requested resource"})


def main():
    cert, key, client_ca, _, port_file = sys.argv[1:6]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(client_ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
