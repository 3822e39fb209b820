"""The official Python client against the API server alone: create, read,
list with selectors, the three patch types it sends, watch from a list's
resourceVersion, the scale subresource, deletion, and the Status codes and
reasons of bad requests as the client raises them. Usage: api.py KUBECONFIG.
Exits non-zero, naming what differed, when anything does."""

import json
import sys
import uuid

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config(sys.argv[1])
core, apps = client.CoreV1Api(), client.AppsV1Api()


def status_of(call):
    """The HTTP code and Status body of a call that must fail."""
    try:
        call()
    except ApiException as e:
        return e.status, json.loads(e.body)
    raise AssertionError("the call succeeded")


ns = "py-client-" + uuid.uuid4().hex[:8]
core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
code, body = status_of(lambda: core.create_namespace({"metadata": {"name": ns}}))
assert (code, body["reason"]) == (409, "AlreadyExists"), (code, body)
assert body["message"] == f'namespaces "{ns}" already exists', body

cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "settings", "labels": {"app": "py"}}, "data": {"mode": "fast"}})
assert cm.metadata.resource_version and cm.metadata.uid, cm.metadata
core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="other"), data={"x": "1"}))
listed = core.list_namespaced_config_map(ns, label_selector="app=py")
assert [c.metadata.name for c in listed.items] == ["settings"], listed.items
assert [c.metadata.name for c in core.list_namespaced_config_map(ns, field_selector="metadata.name=other").items] == ["other"]

# Each patch type the client sends: a dict is a strategic merge patch, a list a JSON patch.
core.patch_namespaced_config_map("settings", ns, {"data": {"level": "2"}})
core.patch_namespaced_config_map("settings", ns, [{"op": "replace", "path": "/data/mode", "value": "slow"}])
got = core.read_namespaced_config_map("settings", ns)
assert got.data == {"mode": "slow", "level": "2"}, got.data

code, body = status_of(lambda: core.read_namespaced_config_map("missing", ns))
assert (code, body["reason"], body["details"]["name"], body["details"]["kind"]) == (404, "NotFound", "missing", "configmaps"), body
code, body = status_of(lambda: core.create_namespaced_config_map(ns, {"metadata": {"name": "Bad_Name"}}))
assert (code, body["reason"]) == (422, "Invalid"), (code, body)
assert "metadata.name" in body["message"] and "Bad_Name" in body["message"], body["message"]
# An update that changes nothing keeps the resourceVersion; one that
# changes something moves it, and a writer holding the old one gets 409.
assert core.replace_namespaced_config_map("settings", ns, got).metadata.resource_version == got.metadata.resource_version
got.data["mode"] = "kept"
assert core.replace_namespaced_config_map("settings", ns, got).metadata.resource_version != got.metadata.resource_version
got.data["mode"] = "lost"
code, body = status_of(lambda: core.replace_namespaced_config_map("settings", ns, got))
assert (code, body["reason"]) == (409, "Conflict"), (code, body)
assert "the object has been modified" in body["message"], body["message"]

# A watch from the list's resourceVersion sees what follows, in order.
rv = core.list_namespaced_config_map(ns).metadata.resource_version
core.create_namespaced_config_map(ns, {"metadata": {"name": "watched"}, "data": {"v": "1"}})
core.patch_namespaced_config_map("watched", ns, {"data": {"v": "2"}})
core.delete_namespaced_config_map("watched", ns)
seen = []
for ev in watch.Watch().stream(core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=10):
    if ev["object"].metadata.name == "kube-root-ca.crt":  # the root CA publisher's, any time after the namespace
        continue
    seen.append((ev["type"], ev["object"].metadata.name, (ev["object"].data or {}).get("v")))
    if len(seen) == 3:
        break
assert seen == [("ADDED", "watched", "1"), ("MODIFIED", "watched", "2"), ("DELETED", "watched", "2")], seen

# A Deployment: defaults filled in, scaled through its scale subresource.
dep = apps.create_namespaced_deployment(ns, {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
             "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})
assert dep.spec.strategy.type == "RollingUpdate" and dep.spec.revision_history_limit == 10, dep.spec
assert dep.spec.template.spec.containers[0].image_pull_policy == "Always", dep.spec.template.spec.containers[0]
scale = apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 3}})
assert scale.spec.replicas == 3 and scale.kind == "Scale", scale
assert apps.read_namespaced_deployment("web", ns).spec.replicas == 3
code, body = status_of(lambda: apps.create_namespaced_deployment(ns, {"metadata": {"name": "empty"}, "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "c"}}, "spec": {"containers": []}}}}))
assert (code, body["reason"]) == (422, "Invalid"), (code, body)
assert "spec.template.metadata.labels" in body["message"] and "spec.template.spec.containers" in body["message"], body["message"]

apps.delete_namespaced_deployment("web", ns, propagation_policy="Foreground")
core.delete_namespace(ns)
print("python client: api ok")
