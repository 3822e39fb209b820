"""An operator written with kopf (PyPI), run against skiff by tests/kopf.rs.

For each Greeting it keeps a ConfigMap `greeting-NAME` (owned by the
Greeting, through kopf.adopt) holding the greeting's text; the handlers'
results land in the Greeting's status, as kopf stores them. Deleting a
Greeting runs the delete handler (kopf's finalizer holds the object until
it has), which records the deletion in a ConfigMap of its own.
"""

import kopf
import kubernetes


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_):
    kubernetes.config.load_kube_config()
    # Quick retries: a test is waiting.
    settings.watching.server_timeout = 30
    settings.posting.level = 20


def text(spec):
    return f"{spec.get('salutation', 'hello')}, {spec['name']}"


@kopf.on.create("demo.skiff.dev", "v1", "greetings")
def create_fn(spec, name, namespace, **_):
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"greeting-{name}"}, "data": {"text": text(spec)}}
    kopf.adopt(body)
    kubernetes.client.CoreV1Api().create_namespaced_config_map(namespace, body)
    return {"message": text(spec)}


@kopf.on.update("demo.skiff.dev", "v1", "greetings")
def update_fn(spec, name, namespace, diff, **_):
    kubernetes.client.CoreV1Api().patch_namespaced_config_map(f"greeting-{name}", namespace, {"data": {"text": text(spec)}})
    return {"message": text(spec), "changes": len(diff)}


@kopf.on.delete("demo.skiff.dev", "v1", "greetings")
def delete_fn(name, namespace, **_):
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"farewell-{name}"}, "data": {"text": f"goodbye, {name}"}}
    kubernetes.client.CoreV1Api().create_namespaced_config_map(namespace, body)
