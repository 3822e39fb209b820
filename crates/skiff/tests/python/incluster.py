"""The official Python client with in-cluster settings, run in a pod's
network namespace with that pod's own credentials and environment (what
`config.load_incluster_config()` reads inside the pod: the
`KUBERNETES_SERVICE_HOST`/`PORT` variables the kubelet set, and the token,
`ca.crt` and namespace the ServiceAccount admission mounted). Usage:
incluster.py PID POD, PID being a process of one of the pod's containers. Exits non-zero, naming what differed, when anything does."""

import sys

from kubernetes import client
from kubernetes.config.incluster_config import InClusterConfigLoader

pid, pod = sys.argv[1:3]
root = f"/proc/{pid}/root"
with open(f"/proc/{pid}/environ", "rb") as f:
    environ = dict(kv.split("=", 1) for kv in f.read().decode().split("\0") if "=" in kv)
assert environ.get("KUBERNETES_SERVICE_HOST"), f"the pod's environment names the API: {environ}"
secrets = f"{root}/var/run/secrets/kubernetes.io/serviceaccount"
InClusterConfigLoader(token_filename=f"{secrets}/token", cert_filename=f"{secrets}/ca.crt", environ=environ).load_and_set()
with open(f"{secrets}/namespace") as f:
    ns = f.read()

me = client.AuthenticationV1Api().create_self_subject_review(client.V1SelfSubjectReview())
assert me.status.user_info.username == f"system:serviceaccount:{ns}:default", f"whoami: {me.status.user_info}"
got = client.CoreV1Api().read_namespaced_pod(pod, ns)
assert got.metadata.name == pod, f"read its own pod: {got.metadata.name}"
print("in-cluster:", me.status.user_info.username, environ["KUBERNETES_SERVICE_HOST"])
