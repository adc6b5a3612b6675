"""Delete every ActiveLearningExperiment and PreprocessingJob (the chart's pre-delete hook).

Standard library only; runs in the oraculum image with the hook's service account. Namespaces
come from ORACULUM_NAMESPACES (a JSON list; empty: every namespace). A missing CRD (404) means
there is nothing to delete; a refused request (403) is reported and does not block the uninstall.
"""
import json
import os
import ssl
import sys
import urllib.error
import urllib.request

ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
GROUP = "/apis/oraculum.dev/v1alpha1"
host = os.environ["KUBERNETES_SERVICE_HOST"]
base = "https://%s:%s" % ("[%s]" % host if ":" in host else host, os.environ.get("KUBERNETES_SERVICE_PORT", "443"))
with open(ACCOUNT + "/token", encoding="utf-8") as handle:
    token = handle.read().strip()
context = ssl.create_default_context(cafile=ACCOUNT + "/ca.crt")


def call(method, path):
    request = urllib.request.Request(base + path, method=method,
                                     headers={"Authorization": "Bearer " + token, "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        if error.code in (403, 404):
            print("%s %s: HTTP %s %s" % (method, path, error.code, error.read().decode(errors="replace")[:300]))
            return None
        raise


namespaces = json.loads(os.environ.get("ORACULUM_NAMESPACES") or "[]")
deleted = 0
for plural in ("activelearningexperiments", "preprocessingjobs"):
    for scope in ["/namespaces/" + n for n in namespaces] or [""]:
        listing = call("GET", "%s%s/%s" % (GROUP, scope, plural)) or {}
        for item in listing.get("items", []):
            meta = item["metadata"]
            call("DELETE", "%s/namespaces/%s/%s/%s" % (GROUP, meta["namespace"], plural, meta["name"]))
            print("deleted %s %s/%s" % (plural, meta["namespace"], meta["name"]))
            deleted += 1
print("oraculum uninstall: %d resources deleted; their Jobs follow by garbage collection" % deleted)
sys.exit(0)
