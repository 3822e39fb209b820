"""The official Python client against a pod on a real node: logs, exec
(the exit code from the status channel) and a plain WebSocket port-forward
(v4.channel.k8s.io) to busybox httpd, plus the error channel for a closed
port. Usage: node.py KUBECONFIG NAMESPACE POD. Exits non-zero, naming what
differed, when anything does."""

import sys
import time

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.stream import portforward, stream

kubeconfig, ns, pod = sys.argv[1:4]
config.load_kube_config(kubeconfig)
v1 = client.CoreV1Api()

log = v1.read_namespaced_pod_log(pod, ns)
assert "tick 0" in log, f"pod log: {log!r}"
tail = v1.read_namespaced_pod_log(pod, ns, tail_lines=1)
assert tail.count("\n") == 1 and tail.startswith("tick "), f"tail_lines=1: {tail!r}"

ws = stream(v1.connect_get_namespaced_pod_exec, pod, ns, command=["sh", "-c", "echo out; echo err >&2; exit 3"],
            stdout=True, stderr=True, stdin=False, tty=False, _preload_content=False)
ws.run_forever(timeout=20)
out, err, rc = ws.read_stdout(), ws.read_stderr(), ws.returncode
assert (out, err, rc) == ("out\n", "err\n", 3), f"exec: stdout {out!r} stderr {err!r} exit {rc!r}"
whole = stream(v1.connect_get_namespaced_pod_exec, pod, ns, command=["cat", "/www/index.html"], stderr=True, stdout=True, stdin=False, tty=False)
assert whole == "served\n", f"exec, preloaded: {whole!r}"

pf = portforward(v1.connect_get_namespaced_pod_portforward, pod, ns, ports="8080")
sock = pf.socket(8080)
sock.setblocking(True)
sock.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
reply = b""
while True:
    chunk = sock.recv(4096)
    if not chunk:
        break
    reply += chunk
sock.close()
assert reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n")[0], f"port-forward reply: {reply[:200]!r}"
assert reply.endswith(b"\r\n\r\nserved\n"), f"port-forward body: {reply[-60:]!r}"
assert pf.error(8080) is None, f"error channel: {pf.error(8080)!r}"

closed = portforward(v1.connect_get_namespaced_pod_portforward, pod, ns, ports="9")
sock = closed.socket(9)
sock.setblocking(True)
try:
    sock.sendall(b"x")
    sock.recv(1)
except OSError:
    pass
deadline = time.time() + 10
while closed.error(9) is None and time.time() < deadline:
    time.sleep(0.1)
assert "connection refused" in (closed.error(9) or ""), f"closed port, error channel: {closed.error(9)!r}"

try:
    portforward(v1.connect_get_namespaced_pod_portforward, "no-such-pod", ns, ports="80")
    raise AssertionError("port-forward to a missing pod succeeded")
except ApiException as e:
    assert "404" in str(e) and 'pods \\"no-such-pod\\" not found' in str(e), f"missing pod: {e}"
print("python client: logs, exec, port-forward ok")
