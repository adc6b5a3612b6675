"""operator/rbac.yaml grants what the operator needs and nothing wildcard.

The dynamic check (every request the running operator makes against the emulated API server is
granted) runs at the end of every test in test_operator.py; this one reads the code's own list of
kinds and verbs, so a new verb in the reconciler cannot slip past a test that happens not to use it.
"""

from __future__ import annotations

import yaml

from oraculum.kube import KINDS
from tests.support.operator_harness import RBAC, load_rbac, ungranted

#: What the operator does with each kind: kopf watches (list, watch), the reconciler reads (get),
#: writes status, creates, suspends (patch) and deletes children, and posts Events.
NEEDS = {
    ("oraculum.dev", "activelearningexperiments", "get"), ("oraculum.dev", "activelearningexperiments", "list"),
    ("oraculum.dev", "activelearningexperiments", "watch"), ("oraculum.dev", "activelearningexperiments/status", "patch"),
    ("oraculum.dev", "preprocessingjobs", "get"), ("oraculum.dev", "preprocessingjobs", "list"),
    ("oraculum.dev", "preprocessingjobs", "watch"), ("oraculum.dev", "preprocessingjobs/status", "patch"),
    ("oraculum.dev", "activelearningexperiments/finalizers", "update"),
    ("oraculum.dev", "preprocessingjobs/finalizers", "update"),
    ("batch", "jobs", "list"), ("batch", "jobs", "watch"), ("batch", "jobs", "create"), ("batch", "jobs", "patch"),
    ("batch", "jobs", "delete"),
    ("", "configmaps", "create"), ("", "pods", "list"), ("", "events", "create"),
}


def test_every_kind_the_client_knows_is_covered() -> None:
    plurals = {plural for _, plural in KINDS.values()}
    assert plurals == {resource.split("/")[0] for _, resource, _ in NEEDS}


def test_rbac_grants_the_needs_without_wildcards() -> None:
    rules = load_rbac()
    assert ungranted(NEEDS, rules) == []
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
    assert not any(v in rule["verbs"] for rule in rules for v in ("escalate", "bind", "impersonate"))
    assert not any("secrets" in rule["resources"] for rule in rules)  # Jobs reference the Secret; nobody reads it


def test_role_binding_binds_the_service_account() -> None:
    documents = {d["kind"]: d for d in yaml.safe_load_all(RBAC.read_text()) if d}
    binding, account = documents["ClusterRoleBinding"], documents["ServiceAccount"]
    assert binding["roleRef"]["name"] == documents["ClusterRole"]["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": account["metadata"]["namespace"]}]
