"""An admission webhook server for tests/webhooks.rs: HTTPS (the test's own
CA), AdmissionReview v1, keep-alive connections.

  /validate  denies objects labelled deny=true (403, with a message), and
             warns about every object it sees
  /mutate    adds the label mutated-by=webhook by JSONPatch to objects
             labelled mutate=true
  /convert   converts Shapes (convert.skiff.test) between v1, whose
             spec.size is "10cm", and v2, whose spec.length is
             {value: 10, unit: cm}: a ConversionReview v1

Usage: webhook_server.py CERT KEY PORT_FILE
"""

import base64
import json
import socket
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def convert(self, review):
        request = review["request"]
        want = request["desiredAPIVersion"]
        out = []
        for obj in request["objects"]:
            obj = dict(obj)
            spec = dict(obj.get("spec") or {})
            if want.endswith("/v2") and "size" in spec:
                size = spec.pop("size")
                digits = "".join(c for c in size if c.isdigit())
                spec["length"] = {"value": int(digits), "unit": size[len(digits):]}
            elif want.endswith("/v1") and "length" in spec:
                length = spec.pop("length")
                spec["size"] = f"{length['value']}{length['unit']}"
            obj["spec"] = spec
            obj["apiVersion"] = want
            out.append(obj)
        return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
                "response": {"uid": request["uid"], "convertedObjects": out, "result": {"status": "Success"}}}

    def do_POST(self):
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if review.get("kind") == "ConversionReview":
            return self.reply(self.convert(review))
        request = review["request"]
        obj = request.get("object") or request.get("oldObject") or {}
        labels = (obj.get("metadata") or {}).get("labels") or {}
        response = {"uid": request["uid"], "allowed": True}
        path = self.path.split("?")[0]
        if path == "/validate":
            response["warnings"] = [f"the test webhook saw {request['operation']} {request['resource']['resource']}/{request.get('name', '')}"]
            if labels.get("deny") == "true":
                response["allowed"] = False
                response["status"] = {"code": 403, "message": "objects labelled deny=true are not allowed here"}
        elif path == "/mutate":
            if labels.get("mutate") == "true":
                patch = [{"op": "add", "path": "/metadata/labels/mutated-by", "value": "webhook"}]
                response["patchType"] = "JSONPatch"
                response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
        self.reply({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})

    def reply(self, answer):
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    cert, key, port_file = sys.argv[1:4]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    import os
    os.rename(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
