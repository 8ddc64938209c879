#!/usr/bin/env python3
"""Proves the chart's RBAC covers what the controller really does.

Runs `poolwarden controller` against the Kubernetes API stand-in of the end-to-end tests
(tests/kube/standin.py, which logs every request) and a real PostgreSQL, through a whole policy
life: leader election, watches, the Secret, the finalizer, status, a termination, an annotation,
Events, the policy's deletion and cleanup, SIGTERM. Then checks every request the controller made
against the rules of the chart (the ClusterRole, and the Lease Role in the release namespace), as
the API server's RBAC authorizer would. Twice: with the default values (no pod is evicted, and
`pods/eviction` is not granted), and with `rbac.evictPods: true` and a policy that evicts the pod
of a pinned pool.

Run by scripts/check-packaging, with the packaging virtualenv's python:

    rbac_audit.py --poolwarden target/debug/poolwarden --database-url URL --app-url URL

DATABASE_URL is the monitoring role's; APP_URL an application role's, whose sessions from
127.0.0.1 the audit opens (idle, and idle in a transaction) for poolwarden to find.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import chart_tool  # noqa: E402

ROOT = chart_tool.ROOT
NS = "shop"
LEASE_NAMESPACE = chart_tool.NAMESPACE
# The audit's own requests carry this marker, so that only the controller's are judged.
MARK = "audit=1"


class Standin:
    def __init__(self, log: Path) -> None:
        self.log_path = log
        self.process = subprocess.Popen(
            ["python3", str(ROOT / "tests/kube/standin.py"), "--port", "0", "--watch-stdin"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
        line = self.process.stdout.readline().strip() if self.process.stdout else ""
        if not line.startswith("ready http://"):
            self.process.kill()
            raise SystemExit(f"rbac audit: the Kubernetes stand-in did not start ({line!r}); "
                             f"run scripts/setup\n{log.read_text()[-2000:]}")
        self.url = line.removeprefix("ready ")

    def request(self, method: str, path: str, body: Any = None,
                content_type: str = "application/json") -> Any:
        sep = "&" if "?" in path else "?"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}{path}{sep}{MARK}", data=data, method=method,
                                     headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def stop(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def eventually(what: str, check: Callable[[], Any], seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.3)
    raise SystemExit(f"rbac audit: timed out waiting for {what}")


# ---------------------------------------------------------------------------------------------
# What a request needs, and whether the rules grant it

REQUEST = re.compile(r"^standin: (GET|POST|PUT|PATCH|DELETE) (\S+)")


def attributes(method: str, path_qs: str) -> dict[str, Any] | None:
    """The RBAC request attributes of an API path; None for discovery (granted to everyone)."""
    path, _, query = path_qs.partition("?")
    params = dict(p.partition("=")[::2] for p in query.split("&") if p)
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return None
    if not rest:
        return None
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else None
    subresource = rest[2] if len(rest) > 2 else None
    verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method)
    if method == "GET":
        verb = "get" if name else ("watch" if params.get("watch") in ("1", "true") else "list")
        # As the API server's RequestInfo does: a list or watch by `metadata.name=N` field
        # selector is a request for N, which a rule's resourceNames can allow.
        if not name:
            for selector in urllib.parse.unquote(params.get("fieldSelector", "")).split(","):
                if selector.startswith("metadata.name="):
                    name = selector.removeprefix("metadata.name=")
    if method == "DELETE":
        verb = "delete" if name else "deletecollection"
    return {"verb": verb, "group": group, "resource": resource + (f"/{subresource}" if subresource else ""),
            "namespace": namespace, "name": name}


def allows(rule: dict[str, Any], request: dict[str, Any]) -> bool:
    def has(values: list[str], value: str) -> bool:
        return "*" in values or value in values
    if "resourceNames" in rule and request["name"] not in rule["resourceNames"]:
        return False
    return (has(rule["apiGroups"], request["group"]) and has(rule["resources"], request["resource"])
            and has(rule["verbs"], request["verb"]))


def authorized(request: dict[str, Any], cluster_rules: list[dict[str, Any]],
               roles: dict[str, list[dict[str, Any]]]) -> bool:
    if any(allows(rule, request) for rule in cluster_rules):
        return True
    return any(allows(rule, request) for rule in roles.get(request["namespace"] or "", []))


# ---------------------------------------------------------------------------------------------
# The scenario


POLICY = f"/apis/poolwarden.io/v1alpha1/namespaces/{NS}/poolpolicies/db"


def events_of(api: Standin, reason: str) -> bool:
    return any(e.get("reason") == reason for e in
               (api.request("GET", f"/apis/events.k8s.io/v1/namespaces/{NS}/events") or {}).get("items", []))


def seed_policy(api: Standin, database_url: str, **spec: Any) -> None:
    api.request("POST", f"/api/v1/namespaces/{NS}/secrets", {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db-monitor", "namespace": NS},
        "stringData": {"uri": database_url}})
    api.request("POST", f"/apis/poolwarden.io/v1alpha1/namespaces/{NS}/poolpolicies", {
        "apiVersion": "poolwarden.io/v1alpha1", "kind": "PoolPolicy",
        "metadata": {"name": "db", "namespace": NS},
        "spec": {"database": {"connectionSecretRef": {"name": "db-monitor"}},
                 "mode": "Enforce", "interval": "1s",
                 "idle": {"idleInTransactionTimeout": "1s"}, **spec}})


def pod(name: str, ip: str, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": NS, "labels": {"app": "app"}}
    if owner:
        meta["ownerReferences"] = [owner]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [{"name": "app", "image": "app:1"}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                       "startTime": "2020-01-01T00:00:00Z",
                       "conditions": [{"type": "Ready", "status": "True"}]}}


class Defaults:
    """The chart's defaults (or the values given): a bare pod at 127.0.0.1 (its own workload, annotated through pods'
    patch) leaks two idle sessions and one idle in a transaction; the policy ends the transaction,
    annotates the pod, raises Events, and is deleted (cleanup). No pod is evicted."""

    statements = ["SELECT 1;\n", "SELECT 1;\n", "BEGIN;\nSELECT 1;\n"]

    def __init__(self, values: Path | None = None) -> None:
        self.label = str(values) if values else "defaults"
        self.values = chart_tool.load_values(values) if values else None

    def seed(self, api: Standin, database_url: str) -> None:
        seed_policy(api, database_url,
                    leakDetection={"window": "1s", "strandedIdleAge": "1s", "idleThreshold": 2})
        api.request("POST", f"/api/v1/namespaces/{NS}/pods", pod("app", "127.0.0.1"))

    def run(self, api: Standin) -> None:
        target = f"/api/v1/namespaces/{NS}/pods/app"
        eventually("the pod to be annotated", lambda: (api.request("GET", target) or {})
                   .get("metadata", {}).get("annotations", {}).get("poolwarden.io/leak"))
        eventually("a SessionsTerminated Event", lambda: events_of(api, "SessionsTerminated"))
        api.request("DELETE", POLICY)
        eventually("the policy's cleanup", lambda: api.request("GET", POLICY) is None
                   and "poolwarden.io/leak" not in ((api.request("GET", target) or {})
                                                    .get("metadata", {}).get("annotations") or {}))


class EvictPods:
    """`rbac.evictPods: true` and a policy with `remediation.pinnedPools: Evict`: a Deployment's
    pod at 127.0.0.1 (one of two Ready replicas) holds a pool pinned idle in a transaction; the
    policy ends it, evicts the pod, and is deleted."""

    label = "rbac.evictPods=true"
    values: dict[str, Any] | None = {"rbac": {"evictPods": True}}
    statements = ["BEGIN;\nSELECT 1;\n", "BEGIN;\nSELECT 1;\n"]

    def seed(self, api: Standin, database_url: str) -> None:
        seed_policy(api, database_url, remediation={"pinnedPools": "Evict"})
        d = api.request("POST", f"/apis/apps/v1/namespaces/{NS}/deployments", {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app", "namespace": NS},
            "spec": {"selector": {"matchLabels": {"app": "app"}},
                     "template": {"metadata": {"labels": {"app": "app"}},
                                  "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}})
        rs = api.request("POST", f"/apis/apps/v1/namespaces/{NS}/replicasets", {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "app-5c6d", "namespace": NS, "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "Deployment", "name": "app",
                 "uid": d["metadata"]["uid"], "controller": True}]},
            "spec": {"selector": {"matchLabels": {"app": "app"}}}})
        owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "app-5c6d",
                 "uid": rs["metadata"]["uid"], "controller": True}
        for name, ip in [("app-5c6d-a", "127.0.0.1"), ("app-5c6d-b", "127.0.0.2")]:
            api.request("POST", f"/api/v1/namespaces/{NS}/pods", pod(name, ip, owner))

    def run(self, api: Standin) -> None:
        eventually("the pinned pool's pod to be evicted",
                   lambda: api.request("GET", f"/api/v1/namespaces/{NS}/pods/app-5c6d-a") is None
                   and events_of(api, "PodEvicted"))
        api.request("DELETE", POLICY)
        eventually("the policy's cleanup", lambda: api.request("GET", POLICY) is None)


def sessions(app_url: str, statements: list[str]) -> list[subprocess.Popen[str]]:
    """Sessions held open by psql waiting on stdin, each having run its statements."""
    psql = os.environ.get("PSQL", "psql")
    opened = []
    for text in statements:
        p = subprocess.Popen([psql, "-X", "-q", app_url], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
        assert p.stdin
        p.stdin.write(text)
        p.stdin.flush()
        opened.append(p)
    return opened


def rules(docs: list[chart_tool.Doc]) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """The rendered ClusterRole's rules, and the Roles' by namespace."""
    cluster_rules = [r for d in docs if d.kind == "ClusterRole" for r in d.obj["rules"]]
    roles: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        if d.kind == "Role":
            roles.setdefault(d.namespace or "", []).extend(d.obj["rules"])
    return cluster_rules, roles


def audit(scenario: Defaults | EvictPods, args: argparse.Namespace) -> int:
    """Runs the controller through `scenario` and judges its every request by the chart's RBAC
    rendered with the scenario's values; 0 when all were allowed."""
    print(f"- {scenario.label}")
    docs = chart_tool.render(scenario.values)
    cluster_rules, roles = rules(docs)
    # With the admission webhook on: its configuration exists (as the chart makes it) for the
    # controller to write its CA into, and the webhook listens on a free local port.
    webhook = next((d.obj for d in docs if d.kind == "ValidatingWebhookConfiguration"), None)
    configurations = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
    deployment = next(d for d in docs if d.kind == "Deployment").obj
    chart_args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]

    with tempfile.TemporaryDirectory(prefix="rbac-audit-") as tmp:
        log = Path(tmp) / "standin.log"
        api = Standin(log)
        held: list[subprocess.Popen[str]] = []
        controller = None
        try:
            scenario.seed(api, args.database_url)
            if webhook:
                api.request("POST", configurations, webhook)
            held = sessions(args.app_url, scenario.statements)
            kubeconfig = Path(tmp) / "kubeconfig"
            kubeconfig.write_text(json.dumps({
                "apiVersion": "v1", "kind": "Config", "current-context": "standin",
                "clusters": [{"name": "standin", "cluster": {"server": api.url}}],
                "users": [{"name": "standin", "user": {}}],
                "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "standin"}}]}))
            # The chart's own arguments, but for the port (any free one will do here).
            run_args = ["--http-addr=127.0.0.1:0" if a.startswith("--http-addr=")
                        else "--webhook-addr=127.0.0.1:0" if a.startswith("--webhook-addr=") else a
                        for a in chart_args]
            env = {**os.environ, "KUBECONFIG": str(kubeconfig), "POD_NAME": "poolwarden-audit",
                   "POD_NAMESPACE": LEASE_NAMESPACE, "RUST_LOG": "warn"}
            controller = subprocess.Popen([str(args.poolwarden), *run_args], env=env,
                                          stdout=subprocess.DEVNULL, stderr=(Path(tmp) / "controller.log").open("w"))
            scenario.run(api)
            if webhook:
                name = webhook["metadata"]["name"]
                eventually("the webhook's CA in its configuration", lambda: (
                    (api.request("GET", f"{configurations}/{name}") or {}).get("webhooks") or [{}]
                )[0].get("clientConfig", {}).get("caBundle"))
            controller.send_signal(signal.SIGTERM)
            code = controller.wait(timeout=30)
            if code != 0:
                raise SystemExit(f"rbac audit: the controller exited with {code}:\n"
                                 + (Path(tmp) / "controller.log").read_text()[-2000:])
        finally:
            if controller and controller.poll() is None:
                controller.kill()
            for p in held:
                p.kill()
            api.stop()

        seen: dict[tuple[str, str, str], int] = {}
        denied: list[str] = []
        denied_keys = set()
        for line in log.read_text().splitlines():
            match = REQUEST.match(line)
            if not match or MARK in match.group(2):
                continue
            request = attributes(match.group(1), match.group(2))
            if request is None:
                continue
            key = (request["verb"], f"{request['group'] or 'core'}/{request['resource']}",
                   "cluster-wide" if request["namespace"] is None else f"in {request['namespace']}")
            seen[key] = seen.get(key, 0) + 1
            if not authorized(request, cluster_rules, roles):
                denied.append(f"{match.group(1)} {match.group(2)}")
                denied_keys.add(key)

    for (verb, resource, where), count in sorted(seen.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        verdict = "DENY" if (verb, resource, where) in denied_keys else "ok  "
        print(f"  {verdict}  {verb:6} {resource} {where} ({count}x)")
    used = {(verb, resource) for verb, resource, _ in seen}
    unused = sorted({f"{verb} {resource}" for rule in cluster_rules + [r for rs in roles.values() for r in rs]
                     for group in rule["apiGroups"] for res in rule["resources"] for verb in rule["verbs"]
                     for resource in [f"{group or 'core'}/{res}"] if (verb, resource) not in used})
    if unused:
        print(f"  note  granted, not requested in this run: {', '.join(unused)}")
    evictions = {key for key in seen if key[1] == "core/pods/eviction"}
    granted_evictions = any("pods/eviction" in rule["resources"]
                            for rule in cluster_rules + [r for rs in roles.values() for r in rs])
    if isinstance(scenario, EvictPods) and not evictions:
        print("rbac audit: the controller evicted no pod", file=sys.stderr)
        return 1
    if isinstance(scenario, Defaults) and (evictions or granted_evictions):
        print("rbac audit: with the defaults, pods/eviction must be neither granted nor requested",
              file=sys.stderr)
        return 1
    if denied:
        print("rbac audit: the chart's RBAC would forbid:", file=sys.stderr)
        for line in sorted(set(denied)):
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"  ok    all {sum(seen.values())} requests of the controller are allowed by the chart's RBAC")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--poolwarden", type=Path, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--app-url", required=True)
    parser.add_argument("--values", type=Path,
                        help="chart values to render the roles and arguments with; without them, the "
                             "defaults and rbac.evictPods=true are audited in turn")
    args = parser.parse_args()
    if args.values:
        return audit(Defaults(args.values), args)
    # Both settings of the switch that adds a rule: the defaults grant no eviction, and
    # rbac.evictPods grants exactly what a policy that evicts needs.
    return max(audit(Defaults(), args), audit(EvictPods(), args))


if __name__ == "__main__":
    sys.exit(main())
