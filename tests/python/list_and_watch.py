"""The Python kubernetes client against the real server: list with paging, watch with resume.

Run by tests/server/python.rs as: python list_and_watch.py KUBECONFIG NAMESPACE
Exits non-zero (an AssertionError) on any deviation; prints a JSON summary on success.
"""

import json
import sys

from kubernetes import client, config, watch

GROUP, VERSION, PLURAL = "catalog.automotive.io", "v1alpha1", "catalogimages"


def image(namespace, name):
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CatalogImage",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"registryUrl": f"quay.io/automotive/autosd:{name}", "metadata": {"distro": "autosd10-sig"}},
    }


def main(kubeconfig, namespace):
    config.load_kube_config(config_file=kubeconfig)
    api = client.CustomObjectsApi()
    for i in range(25):
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, image(namespace, f"img-{i:02}"))

    # Paging: every page at most the limit, all pages from one snapshot, every object once.
    names, pages, snapshot, token = [], 0, None, None
    while True:
        page = api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, limit=10, _continue=token)
        pages += 1
        assert len(page["items"]) <= 10, len(page["items"])
        snapshot = snapshot or page["metadata"]["resourceVersion"]
        assert page["metadata"]["resourceVersion"] == snapshot, (page["metadata"], snapshot)
        names += [item["metadata"]["name"] for item in page["items"]]
        token = page["metadata"].get("continue")
        if not token:
            break
    assert pages == 3, pages
    assert names == [f"img-{i:02}" for i in range(25)], names

    # Watch from the list's revision: the next change arrives, nothing before it.
    w = watch.Watch()
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, image(namespace, "late-1"))
    seen = None
    for event in w.stream(api.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                          resource_version=snapshot, timeout_seconds=10):
        seen = (event["type"], event["object"]["metadata"]["name"])
        resume_from = event["object"]["metadata"]["resourceVersion"]
        w.stop()
    assert seen == ("ADDED", "late-1"), seen

    # Resume from the last seen resourceVersion: exactly the changes after it, in order.
    api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "late-1", {"spec": {"tags": ["x"]}})
    api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "img-00")
    events = []
    w = watch.Watch()
    for event in w.stream(api.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                          resource_version=resume_from, timeout_seconds=10):
        events.append((event["type"], event["object"]["metadata"]["name"]))
        if len(events) == 2:
            w.stop()
    assert events == [("MODIFIED", "late-1"), ("DELETED", "img-00")], events

    print(json.dumps({"pages": pages, "listed": len(names), "resumed": events}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
