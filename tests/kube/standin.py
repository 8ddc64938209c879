"""A stateful stand-in for the Kubernetes API server, for poolwarden's end-to-end tests.

Run it as ``python3 tests/kube/standin.py --port PORT`` (``--port 0`` picks a free port); it prints
``ready http://127.0.0.1:PORT`` on stdout once it listens and exits cleanly on SIGTERM or SIGINT
(and, with ``--watch-stdin``, when its standard input closes, i.e. when the test that started it
dies). It serves plain HTTP with no authentication.

It is built on kmock (PyPI ``kmock``): kmock's ``Server`` listens, its ``KubernetesScaffold``
parses requests, answers API discovery (``/api``, ``/apis``, ``/apis/GROUP/VERSION``) and renders
errors as Kubernetes ``Status`` bodies, its bundled catalogue of built-in resources tells kinds and
scopes, and its ``ObjectsArray`` stores every object with its history. kmock's own stateful
``KubernetesEmulator`` is too loose for kube-rs (no resourceVersion, uid or creationTimestamp;
watches replay everything and ignore resourceVersion; no PUT, JSON patch, selectors, status
subresource or optimistic concurrency; error reasons that are not Kubernetes' own), so the API
semantics are implemented here, over those kmock parts.

What it serves, for the built-in resources of kmock's catalogue and the custom resources of the
CRDs in ``crds/`` (or given with ``--crd``):

* list (cluster-wide and namespaced; ``labelSelector``, ``fieldSelector``), in pages of ``limit``
  when asked: each page carries a ``continue`` token and ``remainingItemCount``, and every page of
  one list comes from the snapshot taken with its first (one resourceVersion), as etcd serves it;
  get, create (``generateName`` too), replace, delete (finalizers hold an object with a
  ``deletionTimestamp`` until an update empties them), delete collection;
* watch from a ``resourceVersion`` (or from "now" with every object ADDED, for ``0``, empty or
  ``sendInitialEvents``: a streaming list, ended by the ``k8s.io/initial-events-end`` bookmark),
  with selectors, BOOKMARK events and ``timeoutSeconds``. ``--no-streaming-lists`` refuses
  ``sendInitialEvents`` with 422, as a server without the WatchList feature does;
  ``--no-watch-progress`` accepts such a watch and then fails it inside the stream (an ``ERROR``
  event holding a 500 ``InternalError`` Status, then the end of the stream), as a server does whose
  storage cannot request watch progress (etcd before 3.4.31 / 3.5.13, k3s's kine before 2024);
* patches: JSON merge (RFC 7386), JSON patch (RFC 6902), strategic merge (as a JSON merge patch:
  lists are replaced, not merged by key) and server-side apply: a deep merge that creates the
  object if missing, with field ownership by ``fieldManager`` kept in ``managedFields`` (a list
  is one field): an apply removes the fields its manager applied before and omits now, and fails
  with 409 Conflict to change a field another manager applied, unless ``force=true``;
* validating admission webhooks (``ValidatingWebhookConfiguration``): creates and updates of a
  resource and of its ``scale`` subresource are sent to the matching webhooks over HTTPS (a
  Service's endpoint is where the test says, ``POST /standin/endpoints``), within their timeout,
  honouring ``failurePolicy``; their warnings come back as ``Warning`` headers (see
  ``Standin.admit`` for what is not modelled);
* the ``scale`` subresource of Deployments, StatefulSets and ReplicaSets (an ``autoscaling/v1``
  Scale read from the object's ``spec.replicas`` and written back by PUT or patch, as ``kubectl
  scale`` does); HorizontalPodAutoscalers as any built-in resource, ``autoscaling/v2`` (a real
  server also shows each as ``autoscaling/v1``: here the two versions are two separate stores);
* the ``status`` subresource of every resource that has one: writes to it change only
  ``.status``, writes to the main resource keep the stored ``.status``. ``status`` given on create
  is kept for built-in resources (tests seed pods that way) and dropped for custom resources;
* ``resourceVersion`` (one counter for the whole server), ``uid``, ``creationTimestamp``,
  ``generation`` (bumped when anything but metadata and status changes), 409 Conflict on a stale
  ``resourceVersion``, 409 AlreadyExists, 404 NotFound, ``dryRun``;
* metadata-only answers (``Accept: ...;as=PartialObjectMetadata[List]``);
* what the rest of a control plane does: the Deployment controller's copy of a Deployment's
  annotations onto its ReplicaSets (added and updated there, never removed; matched by the
  ReplicaSet's controller reference to the Deployment's name), and the shared storage of Events:
  an ``events.k8s.io/v1`` Event is also a ``v1`` Event (``regarding`` as ``involvedObject``,
  field selectors on it work, as ``kubectl describe`` uses them);
* the Eviction API (``POST .../pods/NAME/eviction``): the pod is deleted unless a
  PodDisruptionBudget that selects it allows no disruption (429 TooManyRequests, cause
  ``DisruptionBudget``; more than one budget: 500); a budget's allowed disruptions are worked out
  from its ``minAvailable``/``maxUnavailable`` and the Ready pods it selects, as an up-to-date
  disruption controller would keep them. The ReplicaSet of an evicted pod replaces it: a new pod,
  Running, not Ready, Ready a second later (IP in 10.244.0.0/16);
* what a cluster does to its clients, on the test's cue (``POST /standin/...``, see
  ``Standin.admin``): compaction (watches and continue tokens from before answer 410 Gone, open
  watches end, and what they held back is lost: the client must relist), and a few seconds of
  403 Forbidden on every request (RBAC right after an API server restart).

Not served: ownership of the fields written by other means than apply (``managedFields`` only has
Apply entries, and another write just takes from them the fields it changes), namespaces'
existence (an object can be made in a namespace that does not exist; ``default`` and the
``kube-*`` namespaces exist), garbage collection of dependents, graceful pod deletion, schema
validation and admission other than validating webhooks, the other controllers of
kube-controller-manager (no ReplicaSet or Pod is made by the stand-in but the replacement of an
evicted pod; a pod deleted otherwise stays gone, as the tests that make orphans rely on; tests
create the rest), ``v1`` Events under ``events.k8s.io/v1``, subresources other than status, scale
and pods' eviction, defaults (a Deployment created without ``replicas`` or ``strategy`` keeps none:
tests give them), the HorizontalPodAutoscaler controller (nothing scales by itself), mutating
admission webhooks.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import contextlib
import copy
import datetime
import json
import pathlib
import random
import re
import signal
import ssl
import string
import sys
import threading
import traceback
import uuid
from collections.abc import Callable
from typing import Any

try:
    import aiohttp.web
    import attrs
    import jsonpatch
    import jsonpointer
    import kmock
    import yaml
    from kmock._internal import parsing as kmock_parsing
except ImportError as e:  # pragma: no cover
    print(
        f"standin: a Python package is missing ({e}); run scripts/setup (it installs tests/kube/requirements.txt)",
        file=sys.stderr,
        flush=True,
    )
    sys.exit(3)

EXIT_MISSING_PACKAGES = 3
REPO = pathlib.Path(__file__).resolve().parents[2]
META_ONLY = "as=PartialObjectMetadata"
META_API_VERSION = "meta.k8s.io/v1"
ANSWER_JSON = "application/json"
# The stand-in's own endpoints (see `Standin.admin`), for tests to act as the cluster would.
ADMIN = "/standin/"

# kmock's own path parser chokes on the `namespaces` resource (`/api/v1/namespaces` has nothing
# after it); this server routes by its own parser anyway, so only keep kmock's from failing.
_kmock_parse_path = kmock_parsing.parse_path


def _lenient_parse_path(path: str) -> Any:
    try:
        return _kmock_parse_path(path)
    except ValueError:
        return kmock_parsing.ParsedPath()


kmock_parsing.parse_path = _lenient_parse_path


# -------------------------------------------------------------------------------------------------
# Small helpers


def now_rfc3339() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def deep(obj: Any) -> Any:
    return copy.deepcopy(obj)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, ``null`` removes, the rest replaces."""
    if not isinstance(patch, dict):
        return deep(patch)
    result = deep(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def apply_json_patch(doc: Any, ops: list[Any]) -> Any:
    """RFC 6902, as the API server applies it: a `test` for null passes on a missing member (kube's
    finalizer helper tests that `/metadata/finalizers` is null before adding the list)."""
    doc = deep(doc)
    for op in ops:
        if isinstance(op, dict) and op.get("op") == "test" and op.get("value", 0) is None:
            try:
                jsonpointer.resolve_pointer(doc, op.get("path", ""))
            except jsonpointer.JsonPointerException:
                continue
        doc = jsonpatch.apply_patch(doc, [op], in_place=True)
    return doc


def patched(kind: Kind, name: str, content_type: str, doc: Any, body: Any) -> Any:
    """`doc` after a merge (strategic: as a merge), or a JSON patch; 415 for any other type."""
    if content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
        if not isinstance(body, dict):
            raise bad_request("a merge patch must be a JSON object")
        return merge_patch(doc, strip_directives(body))
    if content_type == "application/json-patch+json":
        if not isinstance(body, list):
            raise bad_request("a JSON patch must be a JSON array")
        try:
            return apply_json_patch(doc, body)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, KeyError, TypeError) as e:
            raise invalid(kind, name, f"the JSON patch failed: {e}") from None
    raise api_error(415, "UnsupportedMediaType", f"the media type {content_type!r} is not supported for PATCH")


def strip_directives(patch: Any) -> Any:
    """Drops the `$patch`, `$setElementOrder/…`, `$retainKeys`… directives of strategic patches."""
    if isinstance(patch, dict):
        return {k: strip_directives(v) for k, v in patch.items() if not k.startswith("$")}
    if isinstance(patch, list):
        return [strip_directives(v) for v in patch]
    return patch


def field_value(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def deployment_of(rs: dict[str, Any]) -> str | None:
    """The name of the Deployment that controls a ReplicaSet (this stand-in does not check uids)."""
    for ref in rs["metadata"].get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == "Deployment" and ref.get("apiVersion") == "apps/v1":
            return ref.get("name")
    return None


# The Deployment controller's own annotations, which it never copies onto ReplicaSets.
NOT_COPIED_TO_REPLICASETS = {
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
}


# How many unfinished paged lists the server remembers.
MAX_SNAPSHOTS = 64


def make_continue_token(snapshot_id: str, start: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"snapshot": snapshot_id, "start": start}).encode()).decode()


def continue_token_parts(token: str) -> tuple[str, int]:
    try:
        parts = json.loads(base64.urlsafe_b64decode(token.encode()))
        return str(parts["snapshot"]), int(parts["start"])
    except (ValueError, KeyError, TypeError):
        raise bad_request(f"invalid continue token: {token!r}") from None


# -------------------------------------------------------------------------------------------------
# Errors, rendered by kmock as `Status` bodies


def api_error(code: int, reason: str, message: str, kind: Kind | None = None, name: str = "") -> Exception:
    details: dict[str, Any] = {}
    if kind is not None:
        details = {"group": kind.group, "kind": kind.plural}
        if name:
            details["name"] = name
    return kmock.KubernetesError(status=code, reason=reason, message=message, details=details or {"causes": []})


def not_found(kind: Kind, name: str) -> Exception:
    return api_error(404, "NotFound", f'{kind.qualified} "{name}" not found', kind, name)


def conflict(kind: Kind, name: str) -> Exception:
    return api_error(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {kind.qualified} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        kind,
        name,
    )


def bad_request(message: str) -> Exception:
    return api_error(400, "BadRequest", message)


def invalid(kind: Kind, name: str, message: str) -> Exception:
    return api_error(422, "Invalid", f'{kind.kind} "{name}" is invalid: {message}', kind, name)


# -------------------------------------------------------------------------------------------------
# Selectors

Predicate = Callable[[dict[str, Any]], bool]


def split_terms(text: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += ch
    terms.append(current)
    return [t.strip() for t in terms if t.strip()]


_SET_TERM = re.compile(r"^(\S+)\s+(in|notin)\s+\((.*)\)$")


def label_selector(text: str) -> Predicate:
    checks: list[Callable[[dict[str, str]], bool]] = []
    for term in split_terms(text):
        if m := _SET_TERM.match(term):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if op == "in":
                checks.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                checks.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif term.startswith("!"):
            absent = term[1:].strip()
            checks.append(lambda labels, k=absent: k not in labels)
        elif "!=" in term:
            key, value = (p.strip() for p in term.split("!=", 1))
            checks.append(lambda labels, k=key, v=value: labels.get(k) != v)
        elif "=" in term:
            key, value = (p.strip() for p in re.split("==?", term, maxsplit=1))
            checks.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif re.fullmatch(r"[A-Za-z0-9./_-]+", term):
            checks.append(lambda labels, k=term: k in labels)
        else:
            raise bad_request(f"unable to parse requirement: {term!r}")

    def predicate(obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(check(labels) for check in checks)

    return predicate


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Whether a LabelSelector object (`matchLabels`, `matchExpressions`) selects `labels`. An
    empty selector selects everything; a missing one nothing (as a PodDisruptionBudget's does)."""
    if selector is None:
        return False
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def is_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or pod["metadata"].get("deletionTimestamp"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def desired_healthy(spec: dict[str, Any], expected: int) -> int:
    """The healthy pods a PodDisruptionBudget wants, of `expected` selected: `minAvailable`, or
    `expected - maxUnavailable` (percentages of `expected`, minAvailable rounded up and
    maxUnavailable rounded up too, as the disruption controller does)."""

    def resolve(value: Any) -> int:
        if isinstance(value, str) and value.endswith("%"):
            return -(-int(value[:-1]) * expected // 100)
        return int(value)

    if "minAvailable" in spec:
        return resolve(spec["minAvailable"])
    if "maxUnavailable" in spec:
        return max(0, expected - resolve(spec["maxUnavailable"]))
    return expected


def field_selector(text: str) -> Predicate:
    checks: list[Predicate] = []
    for term in split_terms(text):
        if "!=" in term:
            path, value = (p.strip() for p in term.split("!=", 1))
            checks.append(lambda obj, p=path, v=value: field_value(obj, p) != v)
        elif "=" in term:
            path, value = (p.strip() for p in re.split("==?", term, maxsplit=1))
            checks.append(lambda obj, p=path, v=value: field_value(obj, p) == v)
        else:
            raise bad_request(f"invalid field selector: {term!r}")
    return lambda obj: all(check(obj) for check in checks)


# -------------------------------------------------------------------------------------------------
# Resources


@attrs.frozen
class Kind:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    status: bool  # has a `status` subresource
    custom: bool  # a custom resource (from a CRD)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def resource(self) -> kmock.resource:
        return kmock.resource(self.group, self.version, self.plural)


@attrs.frozen
class Route:
    kind: Kind
    namespace: str | None
    name: str | None
    subresource: str | None


@attrs.frozen
class Change:
    """One write, as watches see it: `new` is the object after it (its last state if deleted)."""

    rv: int
    kind: Kind
    type: str  # ADDED, MODIFIED, DELETED
    new: dict[str, Any]
    old: dict[str, Any] | None


# What the stand-in needs of crds/poolpolicy.yaml, for when that file cannot be read.
POOLPOLICY_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "poolpolicies.poolwarden.io"},
    "spec": {
        "group": "poolwarden.io",
        "names": {"kind": "PoolPolicy", "plural": "poolpolicies", "singular": "poolpolicy", "shortNames": ["pp"]},
        "scope": "Namespaced",
        "versions": [{"name": "v1alpha1", "served": True, "storage": True, "subresources": {"status": {}}}],
    },
}


@attrs.define(kw_only=True)
class Standin(kmock.KubernetesScaffold):
    crds: list[pathlib.Path] = attrs.field(factory=list)
    kinds: dict[tuple[str, str, str], Kind] = attrs.field(factory=dict, init=False)
    objects: kmock.ObjectsArray = attrs.field(factory=kmock.ObjectsArray, init=False)
    changes: dict[Kind, list[Change]] = attrs.field(factory=dict, init=False)
    rv: int = attrs.field(default=0, init=False)
    changed: asyncio.Condition = attrs.field(factory=asyncio.Condition, init=False)
    state_lock: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)
    stopping: bool = attrs.field(default=False, init=False)
    # Whether a watch may ask for its initial list as events (`sendInitialEvents`, the WatchList
    # feature); off, such a watch is refused as a server without the feature refuses it.
    streaming_lists: bool = True
    # Whether the storage can request watch progress, which a streaming list needs; off, such a
    # watch is accepted and then failed inside the stream, as kube-apiserver's cacher does it.
    watch_progress: bool = True
    # Compaction: resourceVersions up to here are gone (a watch or a continue token from before is
    # answered 410 Gone). Raised by `POST /standin/expire`.
    compacted_rv: int = attrs.field(default=0, init=False)
    # Bumped by `POST /standin/expire`: every watch opened before ends at once.
    watch_epoch: int = attrs.field(default=0, init=False)
    # `POST /standin/pause-watches`: open watches hold their events back until the next expire.
    paused: bool = attrs.field(default=False, init=False)
    # `POST /standin/forbid?seconds=N`: until then, every API request is answered 403 Forbidden.
    forbidden_until: float = attrs.field(default=0.0, init=False)
    # Requests by their User-Agent header ("" when there is none), as an audit log tells clients
    # apart; `POST /standin/user-agents` reads them.
    user_agents: dict[str, int] = attrs.field(factory=dict, init=False)
    # The consistent snapshots behind unfinished paged lists, by continue-token id.
    snapshots: dict[str, tuple[int, list[dict[str, Any]]]] = attrs.field(factory=dict, init=False)
    # Pods made to replace evicted ones so far (their IPs count up), and how long one takes to
    # turn Ready.
    replaced: int = attrs.field(default=0, init=False)
    replacement_ready_after: float = 1.0
    # Where each Service's endpoint listens, `(namespace, name) -> "host:port"`, set by the test
    # (`POST /standin/endpoints`): how the API server reaches an admission webhook's Service.
    endpoints: dict[tuple[str, str], str] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.resources.load_bundled()
        for res in self.resources:
            info = self.resources[res]
            if res.plural and info.kind:
                self.kinds[res.group, res.version, res.plural] = Kind(
                    group=res.group,
                    version=res.version,
                    plural=res.plural,
                    kind=info.kind,
                    namespaced=bool(info.namespaced),
                    status="status" in info.subresources,
                    custom=False,
                )
        for namespace in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.seed("", "v1", "namespaces", {"metadata": {"name": namespace}, "status": {"phase": "Active"}})
        for path in self.crds:
            for doc in yaml.safe_load_all(path.read_text()):
                if doc and doc.get("kind") == "CustomResourceDefinition":
                    self.register_crd(doc)
                    self.seed("apiextensions.k8s.io", "v1", "customresourcedefinitions", doc)
        if ("poolwarden.io", "v1alpha1", "poolpolicies") not in self.kinds:
            # Without crds/poolpolicy.yaml (say, while it is being regenerated), its essentials.
            self.register_crd(POOLPOLICY_CRD)

    def register_crd(self, crd: dict[str, Any]) -> None:
        spec = crd["spec"]
        names = spec["names"]
        for version in spec["versions"]:
            kind = Kind(
                group=spec["group"],
                version=version["name"],
                plural=names["plural"],
                kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                status="status" in (version.get("subresources") or {}),
                custom=True,
            )
            self.kinds[kind.group, kind.version, kind.plural] = kind
            self.resources[kind.resource] = kmock.ResourceInfo(
                kind=kind.kind,
                singular=names.get("singular"),
                namespaced=kind.namespaced,
                verbs={"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"},
                shortnames=set(names.get("shortNames") or []),
                categories=set(names.get("categories") or []),
                subresources={"status"} if kind.status else set(),
            )

    def seed(self, group: str, version: str, plural: str, obj: dict[str, Any]) -> None:
        """Stores an object before the server starts (no watch event)."""
        kind = self.kinds[group, version, plural]
        obj = deep(obj)
        self.rv += 1
        meta = obj.setdefault("metadata", {})
        obj.setdefault("apiVersion", kind.api_version)
        obj.setdefault("kind", kind.kind)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339(), resourceVersion=str(self.rv), generation=1)
        self.objects[kind.resource, meta.get("namespace"), meta["name"]] = obj

    # ---------------------------------------------------------------------------------------------
    # Routing

    def route(self, path: str) -> Route | None:
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 2 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        if not rest:
            return None  # discovery
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3 and (group, version, rest[2]) in self.kinds:
            namespace, rest = rest[1], rest[2:]
        kind = self.kinds.get((group, version, rest[0]))
        if kind is None:
            raise api_error(404, "NotFound", "the server could not find the requested resource")
        if namespace is not None and not kind.namespaced:
            raise api_error(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        subresource = "/".join(rest[2:]) or None
        eviction = subresource == "eviction" and (kind.group, kind.plural) == ("", "pods")
        if (
            subresource is not None
            and not (subresource == "status" and kind.status)
            and not has_scale(kind, subresource)
            and not eviction
        ):
            raise api_error(404, "NotFound", "the server could not find the requested resource")
        return Route(kind=kind, namespace=namespace, name=name, subresource=subresource)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        raw = request._raw_request
        assert raw is not None
        meta_only = META_ONLY in raw.headers.get("Accept", "")
        log(f"{request.method.value} {raw.path_qs}{' (metadata only)' if meta_only else ''}")
        if request.url.path.startswith(ADMIN):
            return await self.admin(request)
        agent = raw.headers.get("User-Agent", "")
        self.user_agents[agent] = self.user_agents.get(agent, 0) + 1
        try:
            if asyncio.get_running_loop().time() < self.forbidden_until:
                raise api_error(
                    403,
                    "Forbidden",
                    f'{request.url.path} is forbidden: User "system:serviceaccount:poolwarden:poolwarden" '
                    "cannot access it (RBAC: the authorizer is not ready yet)",
                )
            route = self.route(request.url.path)
            if route is None:
                return await super()._handle(request)
            return await self.serve_admitted(request, route)
        except kmock.KubernetesError as e:
            log(f"  -> {e.status} {e.reason}: {e.message}")
            raise
        except Exception:
            log(traceback.format_exc())
            raise

    async def admin(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        """What the tests do to the server itself, as a real cluster would do it to a client:
        `POST /standin/pause-watches` holds open watches' events back; `POST /standin/expire`
        compacts the history (every resourceVersion so far is too old: a watch or a continue token
        from before gets 410 Gone), ends every open watch without the events it held back, and
        unpauses; `POST /standin/forbid?seconds=N` answers every API request 403 for N seconds,
        as RBAC does right after an API server restart; `POST /standin/user-agents` answers how
        many API requests came with each User-Agent ("" for none); `POST
        /standin/endpoints?service=NS/NAME&address=HOST:PORT` says where a Service's endpoint
        listens (no address: it has none), as kube-proxy would route to it."""
        what = request.url.path[len(ADMIN) :]
        if request.method.value != "POST":
            raise api_error(405, "MethodNotAllowed", "the stand-in's own endpoints take POST")
        if what == "pause-watches":
            self.paused = True
        elif what == "expire":
            async with self.state_lock:
                self.compacted_rv = self.rv
                self.watch_epoch += 1
                self.paused = False
                self.snapshots.clear()
            async with self.changed:
                self.changed.notify_all()
        elif what == "forbid":
            seconds = float(request.params.get("seconds") or 5)
            self.forbidden_until = asyncio.get_running_loop().time() + seconds
        elif what == "user-agents":
            return aiohttp.web.json_response({"userAgents": self.user_agents})
        elif what == "endpoints":
            namespace, _, name = (request.params.get("service") or "").partition("/")
            address = request.params.get("address") or ""
            if address:
                self.endpoints[namespace, name] = address
            else:
                self.endpoints.pop((namespace, name), None)
        else:
            raise api_error(404, "NotFound", f"no stand-in endpoint {what!r}")
        return aiohttp.web.json_response({"done": what, "resourceVersion": str(self.rv)})

    async def serve(self, request: kmock.Request, route: Route) -> aiohttp.web.StreamResponse:
        method = request.method.value
        params = request.params
        headers = request._raw_request.headers if request._raw_request is not None else {}
        meta_only = META_ONLY in headers.get("Accept", "")
        if route.subresource == "scale":
            return await self.serve_scale(request, route)
        if method == "GET" and params.get("watch") in ("true", "1"):
            return await self.watch(request, route, meta_only)
        if method == "GET" and route.name is None:
            return reply(self.list(route, params, meta_only))
        if route.name is None and method == "POST":
            if route.kind.namespaced and route.namespace is None:
                raise api_error(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            return reply(await self.create(route, request.data, params), meta_only, status=201)
        if route.name is None and method == "DELETE":
            return reply(await self.delete_collection(route, params), meta_only)
        if route.name is None:
            raise api_error(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if route.kind.namespaced and route.namespace is None:
            raise api_error(404, "NotFound", "the server could not find the requested resource")
        if route.subresource == "eviction":
            if method != "POST":
                raise api_error(405, "MethodNotAllowed", "the eviction subresource only takes POST")
            return reply(await self.evict(route), status=201)
        if method == "GET":
            return reply(self.get(route), meta_only)
        if method == "PUT":
            return reply(await self.replace(route, request.data, params), meta_only)
        if method == "PATCH":
            content_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
            return reply(await self.patch(route, content_type, request.data, params), meta_only)
        if method == "DELETE":
            return reply(await self.delete(route, request.data, params), meta_only)
        raise api_error(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    # ---------------------------------------------------------------------------------------------
    # Storage

    def current(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        key = (kind.resource, namespace, name)
        if key not in self.objects:
            return None
        obj = self.objects[key]
        return None if obj.deleted else deep(obj.raw)

    def existing(self, route: Route) -> dict[str, Any]:
        assert route.name is not None
        obj = self.current(route.kind, route.namespace, route.name)
        if obj is None:
            raise not_found(route.kind, route.name)
        return obj

    def all_of(self, kind: Kind, namespace: str | None) -> list[dict[str, Any]]:
        found = []
        for (resource, ns, _name), obj in self.objects.items():
            if resource == kind.resource and not obj.deleted and (namespace is None or ns == namespace):
                found.append(deep(obj.raw))
        found.sort(key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))
        return found

    async def commit(self, kind: Kind, type_: str, new: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        """Stores a write under a new resourceVersion and tells the watches. Call under the lock."""
        self.rv += 1
        meta = new["metadata"]
        meta["resourceVersion"] = str(self.rv)
        key = (kind.resource, meta.get("namespace"), meta["name"])
        if type_ == "DELETED":
            self.objects[key].delete()
        elif key in self.objects:
            self.objects[key].history.append(deep(new))
        else:
            self.objects[key] = deep(new)
        self.changes.setdefault(kind, []).append(Change(rv=self.rv, kind=kind, type=type_, new=deep(new), old=old))
        async with self.changed:
            self.changed.notify_all()
        await self.after_write(kind, type_, new)
        return new

    async def after_write(self, kind: Kind, type_: str, new: dict[str, Any]) -> None:
        """What the rest of a real control plane does after a write, in the same breath (a real
        one does it a moment later, which makes no difference to a watcher): the Deployment
        controller copies a Deployment's annotations onto its ReplicaSets, and the shared storage
        of Events shows an `events.k8s.io/v1` Event as a `v1` one. Call under the lock."""
        if (kind.group, kind.plural) == ("events.k8s.io", "events"):
            self.mirror_event(type_, new)
        if type_ == "DELETED" or kind.group != "apps":
            return
        namespace = new["metadata"].get("namespace")
        if kind.plural == "deployments":
            for rs in self.all_of(self.kinds["apps", "v1", "replicasets"], namespace):
                if deployment_of(rs) == new["metadata"]["name"]:
                    await self.copy_annotations(new, rs)
        elif kind.plural == "replicasets" and (owner := deployment_of(new)):
            deployment = self.current(self.kinds["apps", "v1", "deployments"], namespace, owner)
            if deployment is not None:
                await self.copy_annotations(deployment, new)

    async def copy_annotations(self, deployment: dict[str, Any], rs: dict[str, Any]) -> None:
        """As kube-controller-manager's `copyDeploymentAnnotationsToReplicaSet`: every annotation
        of the Deployment but its own bookkeeping is set on the ReplicaSet; none is ever removed
        there (a key taken off the Deployment stays on its ReplicaSets)."""
        wanted = {
            k: v
            for k, v in (deployment["metadata"].get("annotations") or {}).items()
            if k not in NOT_COPIED_TO_REPLICASETS
        }
        have = rs["metadata"].get("annotations") or {}
        if all(have.get(k) == v for k, v in wanted.items()):
            return
        new = deep(rs)
        new["metadata"]["annotations"] = {**have, **wanted}
        log(f"  (the Deployment controller copies the annotations of Deployment {deployment['metadata']['name']} "
            f"onto ReplicaSet {rs['metadata']['name']})")
        await self.commit(self.kinds["apps", "v1", "replicasets"], "MODIFIED", new, rs)

    def mirror_event(self, type_: str, new: dict[str, Any]) -> None:
        """An `events.k8s.io/v1` Event, as `GET /api/v1/.../events` shows it (`regarding` becomes
        `involvedObject`, `note` becomes `message`…), under the same name and resourceVersion.
        One way only: Events written as `v1` do not show up under `events.k8s.io/v1`."""
        kind = self.kinds["", "v1", "events"]
        meta = new["metadata"]
        core: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": deep(meta),
            "involvedObject": deep(new.get("regarding") or {}),
            "reason": new.get("reason"),
            "message": new.get("note"),
            "type": new.get("type"),
            "action": new.get("action"),
            "eventTime": new.get("eventTime"),
            "reportingComponent": new.get("reportingController") or "",
            "reportingInstance": new.get("reportingInstance") or "",
            "source": deep(new.get("deprecatedSource") or {}),
            "firstTimestamp": new.get("deprecatedFirstTimestamp"),
            "lastTimestamp": new.get("deprecatedLastTimestamp"),
            "count": new.get("deprecatedCount"),
        }
        if new.get("related"):
            core["related"] = deep(new["related"])
        if new.get("series"):
            core["series"] = {
                "count": new["series"].get("count"),
                "lastObservedTime": new["series"].get("lastObservedTime"),
            }
        core = {k: v for k, v in core.items() if v is not None}
        key = (kind.resource, meta.get("namespace"), meta["name"])
        old = self.current(kind, meta.get("namespace"), meta["name"])
        if type_ == "DELETED":
            if key in self.objects:
                self.objects[key].delete()
        elif key in self.objects:
            self.objects[key].history.append(deep(core))
        else:
            self.objects[key] = deep(core)
        self.changes.setdefault(kind, []).append(Change(rv=self.rv, kind=kind, type=type_, new=core, old=old))

    # ---------------------------------------------------------------------------------------------
    # Reads

    def filters(self, route: Route, params: dict[str, str]) -> Predicate:
        checks: list[Predicate] = []
        if route.name is not None:
            checks.append(lambda obj: obj["metadata"]["name"] == route.name)
        if route.namespace is not None:
            checks.append(lambda obj: obj["metadata"].get("namespace") == route.namespace)
        if params.get("labelSelector"):
            checks.append(label_selector(params["labelSelector"]))
        if params.get("fieldSelector"):
            checks.append(field_selector(params["fieldSelector"]))
        return lambda obj: all(check(obj) for check in checks)

    def list(self, route: Route, params: dict[str, str], meta_only: bool) -> dict[str, Any]:
        """A list, in pages of `limit` when asked: every page comes from one consistent snapshot
        (taken with the first page, at its resourceVersion), and the `continue` token that asks
        for the next expires with compaction (410 Gone), as etcd's do."""
        limit = int(params.get("limit") or 0)
        token = params.get("continue")
        if token:
            snapshot_id, start = continue_token_parts(token)
            if snapshot_id not in self.snapshots:
                raise api_error(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. "
                    "You can start a new list without the continue parameter.",
                )
            rv, items = self.snapshots[snapshot_id]
        else:
            keep = self.filters(route, params)
            rv, items = self.rv, [obj for obj in self.all_of(route.kind, route.namespace) if keep(obj)]
            snapshot_id, start = uuid.uuid4().hex, 0
        metadata: dict[str, Any] = {"resourceVersion": str(rv)}
        page = items[start:]
        if limit > 0 and len(page) > limit:
            page = page[:limit]
            self.snapshots[snapshot_id] = (rv, items)
            while len(self.snapshots) > MAX_SNAPSHOTS:  # the oldest unfinished lists are forgotten
                del self.snapshots[next(iter(self.snapshots))]
            metadata["continue"] = make_continue_token(snapshot_id, start + limit)
            metadata["remainingItemCount"] = len(items) - start - limit
        else:
            self.snapshots.pop(snapshot_id, None)
        if meta_only:
            return {
                "apiVersion": META_API_VERSION,
                "kind": "PartialObjectMetadataList",
                "metadata": metadata,
                "items": [metadata_of(obj) for obj in page],
            }
        return {
            "apiVersion": route.kind.api_version,
            "kind": f"{route.kind.kind}List",
            "metadata": metadata,
            "items": page,
        }

    def get(self, route: Route) -> dict[str, Any]:
        return self.existing(route)

    async def watch(self, request: kmock.Request, route: Route, meta_only: bool) -> aiohttp.web.StreamResponse:
        params = request.params
        keep = self.filters(route, params)
        bookmarks = params.get("allowWatchBookmarks") == "true"
        timeout = float(params.get("timeoutSeconds") or 1800)
        since = params.get("resourceVersion") or "0"
        if not since.isdigit():
            raise bad_request(f"invalid resourceVersion: {since!r}")
        streaming = params.get("sendInitialEvents") == "true"
        if streaming and not self.streaming_lists:
            raise api_error(
                422,
                "Invalid",
                "ListOptions.meta.k8s.io \"\" is invalid: sendInitialEvents: Forbidden: sendInitialEvents is "
                "forbidden for watch unless the WatchList feature gate is enabled",
            )
        if streaming and not self.watch_progress:
            return await self.fail_in_stream(request)
        initial = since == "0" or streaming
        epoch = self.watch_epoch

        def encode(type_: str, obj: dict[str, Any]) -> bytes:
            if meta_only and type_ != "BOOKMARK":
                obj = metadata_of(obj)
            return json.dumps({"type": type_, "object": obj}).encode() + b"\n"

        def translate(change: Change) -> bytes | None:
            now_in = keep(change.new)
            if change.type == "ADDED":
                return encode("ADDED", change.new) if now_in else None
            if change.type == "DELETED":
                return encode("DELETED", change.new) if now_in else None
            was_in = change.old is not None and keep(change.old)
            if was_in and now_in:
                return encode("MODIFIED", change.new)
            if now_in:
                return encode("ADDED", change.new)
            if was_in:
                return encode("DELETED", change.new)
            return None

        def bookmark(rv: int, annotations: dict[str, str] | None = None) -> bytes:
            meta: dict[str, Any] = {"resourceVersion": str(rv)}
            if annotations:
                meta["annotations"] = annotations
            obj = {"apiVersion": route.kind.api_version, "kind": route.kind.kind, "metadata": meta}
            if meta_only:
                obj.update(apiVersion=META_API_VERSION, kind="PartialObjectMetadata")
            return encode("BOOKMARK", obj)

        history = self.changes.setdefault(route.kind, [])
        async with self.state_lock:
            first: list[bytes] = []
            if initial:
                first = [encode("ADDED", obj) for obj in self.all_of(route.kind, route.namespace) if keep(obj)]
                if params.get("sendInitialEvents") == "true" and bookmarks:
                    first.append(bookmark(self.rv, {"k8s.io/initial-events-end": "true"}))
                position = len(history)
            else:
                position = bisect.bisect_right(history, int(since), key=lambda change: change.rv)

        raw = request._raw_request
        assert raw is not None
        response = aiohttp.web.StreamResponse(headers={"Content-Type": ANSWER_JSON})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        sent_up_to = 0
        if not initial and int(since) < self.compacted_rv:
            # As the API server does it: a watch that starts, then says 410 Gone and ends.
            await response.prepare(raw)
            gone = {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": f"too old resource version: {since} ({self.compacted_rv})",
                "reason": "Expired",
                "code": 410,
            }
            log(f"  -> 410 Gone: too old resource version {since} (compacted at {self.compacted_rv})")
            await response.write(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
            await response.write_eof()
            return response
        try:
            await response.prepare(raw)
            for line in first:
                await response.write(line)
            while not self.stopping and epoch == self.watch_epoch:
                while position < len(history) and not self.paused:
                    change = history[position]
                    position += 1
                    if line := translate(change):
                        await response.write(line)
                # Every change of this kind up to here is sent (nothing awaited since the check).
                if not self.paused:
                    sent_up_to = self.rv
                left = deadline - loop.time()
                if left <= 0:
                    break
                if raw.transport is None or raw.transport.is_closing():
                    return response  # the client went away
                async with self.changed:
                    idle = position == len(history) or self.paused
                    if idle and not self.stopping and epoch == self.watch_epoch:
                        # Short waits, to notice a client that went away while nothing happens.
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self.changed.wait(), min(left, 5.0))
            if bookmarks and not self.stopping and epoch == self.watch_epoch:
                await response.write(bookmark(sent_up_to))
            await response.write_eof()
        except ConnectionError:
            pass
        return response

    async def fail_in_stream(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        """A streaming list on storage that cannot request watch progress, as kube-apiserver
        answers it (its cacher's `newErrWatcher`): the watch is accepted (200), its only event is
        an ERROR holding an `InternalError` Status, and the stream ends."""
        raw = request._raw_request
        assert raw is not None
        response = aiohttp.web.StreamResponse(headers={"Content-Type": ANSWER_JSON})
        await response.prepare(raw)
        failure = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "a watch stream was requested by the client but the required storage feature "
            "RequestWatchProgress is disabled",
            "reason": "InternalError",
            "code": 500,
        }
        log("  -> 200, then ERROR 500 InternalError in the stream: RequestWatchProgress is disabled")
        with contextlib.suppress(ConnectionError):
            await response.write(json.dumps({"type": "ERROR", "object": failure}).encode() + b"\n")
            await response.write_eof()
        return response

    # ---------------------------------------------------------------------------------------------
    # Writes

    def prepare_new(self, route: Route, body: Any) -> dict[str, Any]:
        kind = route.kind
        if not isinstance(body, dict):
            raise bad_request("the body of the request must be a JSON object")
        obj = deep(body)
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if obj.get("apiVersion", kind.api_version) != kind.api_version or obj.get("kind", kind.kind) != kind.kind:
            raise bad_request(
                f"the object's apiVersion/kind {obj.get('apiVersion')}/{obj.get('kind')} "
                f"does not match {kind.api_version}/{kind.kind}"
            )
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        if kind.namespaced:
            if meta.get("namespace") not in (None, "", route.namespace):
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = route.namespace
        else:
            meta.pop("namespace", None)
        if route.name is not None and meta.get("name") not in (None, "", route.name):
            raise bad_request("the name of the object does not match the name on the URL")
        if route.name is not None:
            meta["name"] = route.name
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise invalid(kind, "", "metadata.name: Required value: name or generateName is required")
            suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
            meta["name"] = meta["generateName"] + suffix
        for field in ("uid", "resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
            meta.pop(field, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339(), generation=1)
        if kind.custom and kind.status:
            obj.pop("status", None)
        return normalize(kind, obj)

    async def create(self, route: Route, body: Any, params: dict[str, str]) -> dict[str, Any]:
        obj = self.prepare_new(route, body)
        meta = obj["metadata"]
        async with self.state_lock:
            if self.current(route.kind, meta.get("namespace"), meta["name"]) is not None:
                raise api_error(
                    409,
                    "AlreadyExists",
                    f'{route.kind.qualified} "{meta["name"]}" already exists',
                    route.kind,
                    meta["name"],
                )
            if params.get("dryRun"):
                return obj
            return await self.commit(route.kind, "ADDED", obj, None)

    async def update(
        self,
        route: Route,
        cur: dict[str, Any],
        new: Any,
        params: dict[str, str],
        owners: Owners | None = None,
    ) -> dict[str, Any]:
        """Stores `new` as the next state of `cur`, the way the main resource or /status would.

        `owners` are the fields each server-side-apply manager owns after an apply; for other
        writes, the managers lose the fields that the write changes or removes.
        """
        kind = route.kind
        assert route.name is not None
        if not isinstance(new, dict) or not isinstance(new.get("metadata", {}), dict):
            raise bad_request("the object must be a JSON object with an object for metadata")
        given_rv = (new.get("metadata") or {}).get("resourceVersion")
        if given_rv and given_rv != cur["metadata"]["resourceVersion"]:
            raise conflict(kind, route.name)
        if route.subresource == "status":
            result = deep(cur)
            if "status" in new:
                result["status"] = deep(new["status"])
            else:
                result.pop("status", None)
        else:
            result = deep(new)
            meta = result.setdefault("metadata", {})
            if meta.get("name") not in (None, route.name):
                raise bad_request("the name of the object does not match the name on the URL")
            old_meta = cur["metadata"]
            for field in (
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ):
                if field in old_meta:
                    meta[field] = old_meta[field]
                else:
                    meta.pop(field, None)
            meta["generation"] = old_meta.get("generation", 1)
            result["apiVersion"], result["kind"] = kind.api_version, kind.kind
            if kind.status:
                if "status" in cur:
                    result["status"] = deep(cur["status"])
                else:
                    result.pop("status", None)
            normalize(kind, result)
            if spec_of(result) != spec_of(cur):
                meta["generation"] = old_meta.get("generation", 1) + 1
        result["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
        if owners is None:
            owners = read_owners(cur)
            for key, paths in owners.items():
                owners[key] = {p for p in paths if path_value(cur, p) == path_value(result, p)}
        write_owners(result, {k: {p for p in v if path_value(result, p)[0]} for k, v in owners.items()}, kind)
        if params.get("dryRun"):
            return result
        deleting = result["metadata"].get("deletionTimestamp")
        if deleting and not result["metadata"].get("finalizers"):
            return await self.commit(kind, "DELETED", result, cur)
        if result == cur:
            return result  # a no-op write keeps the resourceVersion, as Kubernetes does
        return await self.commit(kind, "MODIFIED", result, cur)

    async def replace(self, route: Route, body: Any, params: dict[str, str]) -> dict[str, Any]:
        async with self.state_lock:
            return await self.update(route, self.existing(route), body, params)

    async def patch(self, route: Route, content_type: str, body: Any, params: dict[str, str]) -> dict[str, Any]:
        kind = route.kind
        assert route.name is not None
        async with self.state_lock:
            cur = self.current(kind, route.namespace, route.name)
            if content_type == "application/apply-patch+yaml":
                return await self.apply(route, cur, body, params)
            if cur is None:
                raise not_found(kind, route.name)
            new = patched(kind, route.name, content_type, cur, body)
            return await self.update(route, cur, new, params)

    async def apply(
        self, route: Route, cur: dict[str, Any] | None, body: Any, params: dict[str, str]
    ) -> dict[str, Any]:
        """Server-side apply, with field ownership by manager but without list merge keys: a
        list is one field. An apply merges its fields in, removes the fields that the same
        manager applied before and no longer does (unless another manager applied them too),
        and, without `force`, fails with 409 Conflict to change a field another manager
        applied. Call under the lock."""
        kind = route.kind
        assert route.name is not None
        if not isinstance(body, dict) or not isinstance(body.get("metadata", {}), dict):
            raise bad_request("an apply patch must be a JSON object")
        manager = params.get("fieldManager")
        if not manager:
            raise invalid(kind, route.name, "fieldManager: Required value: is required for apply patch")
        body = deep(body)
        (body.get("metadata") or {}).pop("managedFields", None)
        mine = (manager, route.subresource or "")
        paths = {
            p for p in leaf_paths(body) if (p[0] == "status") == (route.subresource == "status") or not kind.status
        }
        if cur is None:
            if route.subresource is not None:
                raise not_found(kind, route.name)
            obj = self.prepare_new(route, merge_patch({}, body))
            write_owners(obj, {mine: {p for p in paths if path_value(obj, p)[0]}}, kind)
            if params.get("dryRun"):
                return obj
            return await self.commit(kind, "ADDED", obj, None)

        owners = read_owners(cur)
        others = {key: owned for key, owned in owners.items() if key != mine}
        changed = {p for p in paths if path_value(cur, p) != path_value(body, p)}
        clashes = sorted((key[0], p) for key, owned in others.items() for p in changed & owned)
        if clashes and params.get("force") != "true":
            listed = "\n".join(f'- conflict with "{who}": .{".".join(p)}' for who, p in clashes)
            raise api_error(
                409,
                "Conflict",
                f"Apply failed with {len(clashes)} conflict{'s' if len(clashes) > 1 else ''}: {listed}",
                kind,
                route.name,
            )
        base = deep(cur)
        for p in owners.get(mine, set()) - paths:
            if not any(p in owned for owned in others.values()):
                delete_path(base, p)
        new = merge_patch(base, body)
        for key, owned in others.items():
            owners[key] = owned - changed  # forced: the others lose what this apply changes
        owners[mine] = paths
        return await self.update(route, cur, new, params, owners=owners)

    async def delete(self, route: Route, body: Any, params: dict[str, str]) -> dict[str, Any]:
        kind = route.kind
        assert route.name is not None
        options = body if isinstance(body, dict) else {}
        async with self.state_lock:
            cur = self.existing(route)
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != cur["metadata"]["uid"]:
                raise conflict(kind, route.name)
            if pre.get("resourceVersion") and pre["resourceVersion"] != cur["metadata"]["resourceVersion"]:
                raise conflict(kind, route.name)
            if params.get("dryRun") or options.get("dryRun"):
                return cur
            return await self.remove(kind, cur)

    async def remove(self, kind: Kind, cur: dict[str, Any]) -> dict[str, Any]:
        """Deletes `cur`, or marks it for deletion while it has finalizers. Call under the lock."""
        new = deep(cur)
        meta = new["metadata"]
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return cur
            meta["deletionTimestamp"] = now_rfc3339()
            meta["deletionGracePeriodSeconds"] = 0
            return await self.commit(kind, "MODIFIED", new, cur)
        return await self.commit(kind, "DELETED", new, cur)

    async def delete_collection(self, route: Route, params: dict[str, str]) -> dict[str, Any]:
        keep = self.filters(route, params)
        async with self.state_lock:
            doomed = [obj for obj in self.all_of(route.kind, route.namespace) if keep(obj)]
            items = doomed if params.get("dryRun") else [await self.remove(route.kind, obj) for obj in doomed]
        return {
            "apiVersion": route.kind.api_version,
            "kind": f"{route.kind.kind}List",
            "metadata": {"resourceVersion": str(self.rv)},
            "items": items,
        }

    # ---------------------------------------------------------------------------------------------
    # The Eviction API, and the ReplicaSet controller that replaces an evicted pod

    async def evict(self, route: Route) -> dict[str, Any]:
        """`POST .../pods/NAME/eviction` (policy/v1 Eviction), as the API server's eviction REST
        does it: the pod is deleted unless a PodDisruptionBudget selecting it allows no disruption
        now (429 TooManyRequests, reason `DisruptionBudget`), and a pod under more than one budget
        is refused with 500, as a real server refuses it. A budget's allowed disruptions are worked
        out here from its spec and the pods it selects (Running and Ready ones are healthy), as a
        disruption controller that is always up to date would keep its status. An evicted pod of a
        ReplicaSet is replaced (see `replace_pod`)."""
        assert route.name is not None
        async with self.state_lock:
            pod = self.existing(route)
            labels = pod["metadata"].get("labels") or {}
            pdb_kind = self.kinds["policy", "v1", "poddisruptionbudgets"]
            budgets = [
                b for b in self.all_of(pdb_kind, route.namespace)
                if selects((b.get("spec") or {}).get("selector"), labels)
            ]
            if len(budgets) > 1:
                raise api_error(
                    500, "InternalError",
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                )
            if budgets:
                budget = budgets[0]
                selected = [
                    p for p in self.all_of(route.kind, route.namespace)
                    if selects((budget.get("spec") or {}).get("selector"), p["metadata"].get("labels") or {})
                ]
                healthy = sum(1 for p in selected if is_ready(p))
                desired = desired_healthy(budget.get("spec") or {}, len(selected))
                if healthy - desired < 1:
                    raise kmock.KubernetesError(
                        status=429,
                        reason="TooManyRequests",
                        message="Cannot evict pod as it would violate the pod's disruption budget.",
                        details={"causes": [{
                            "reason": "DisruptionBudget",
                            "message": f"The disruption budget {budget['metadata']['name']} needs {desired} "
                                       f"healthy pods and has {healthy} currently",
                        }]},
                    )
            await self.remove(route.kind, pod)
            log(f"  (evicted pod {route.name})")
            await self.replace_pod(route.kind, pod)
        return {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success"}

    async def replace_pod(self, kind: Kind, gone: dict[str, Any]) -> None:
        """As the ReplicaSet controller does for a pod of its ReplicaSet that went away: a new pod
        with the same labels, spec and owner, Running but not Ready, that turns Ready a second
        later (an IP of 10.244.0.0/16, so that no test's session is attributed to it). Only after
        an eviction: the tests that delete pods rely on them staying gone. Call under the lock."""
        owner = next(
            (o for o in gone["metadata"].get("ownerReferences") or []
             if o.get("controller") and o.get("kind") == "ReplicaSet"),
            None,
        )
        if owner is None:
            return
        self.replaced += 1
        ip = f"10.244.{self.replaced // 250}.{self.replaced % 250 + 1}"
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        meta = gone["metadata"]
        new: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{owner['name']}-{suffix}",
                "namespace": meta.get("namespace"),
                "labels": deep(meta.get("labels") or {}),
                "ownerReferences": [deep(owner)],
                "uid": str(uuid.uuid4()),
                "creationTimestamp": now_rfc3339(),
                "generation": 1,
            },
            "spec": deep(gone.get("spec") or {}),
            "status": {
                "phase": "Running",
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "startTime": now_rfc3339(),
                "conditions": [{"type": "Ready", "status": "False"}],
            },
        }
        log(f"  (ReplicaSet {owner['name']} replaces it with pod {new['metadata']['name']})")
        await self.commit(kind, "ADDED", new, None)
        asyncio.get_running_loop().call_later(
            self.replacement_ready_after, lambda: asyncio.ensure_future(self.turn_ready(kind, new))
        )

    async def turn_ready(self, kind: Kind, pod: dict[str, Any]) -> None:
        async with self.state_lock:
            meta = pod["metadata"]
            cur = self.current(kind, meta.get("namespace"), meta["name"])
            if cur is None:
                return
            new = deep(cur)
            new["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
            await self.commit(kind, "MODIFIED", new, cur)

    # ---------------------------------------------------------------------------------------------
    # The scale subresource

    async def serve_scale(self, request: kmock.Request, route: Route) -> aiohttp.web.StreamResponse:
        """`.../deployments/NAME/scale` (and statefulsets', replicasets'), as `kubectl scale` and
        an HPA use it: an `autoscaling/v1` Scale read from the object, and written back as its
        `spec.replicas` by PUT or a merge or JSON patch (409 on a stale `resourceVersion`, 422 on
        a replica count that is not a whole number of zero or more)."""
        main = attrs.evolve(route, subresource=None)
        if request.method.value == "GET":
            return reply(scale_of(self.existing(main)))
        assert route.name is not None
        async with self.state_lock:
            cur = self.existing(main)
            new_scale = self.new_scale(request, route, cur)
            given_rv = (new_scale.get("metadata") or {}).get("resourceVersion")
            if given_rv and given_rv != cur["metadata"]["resourceVersion"]:
                raise conflict(route.kind, route.name)
            new = deep(cur)
            new.setdefault("spec", {})["replicas"] = new_scale["spec"]["replicas"]
            stored = await self.update(main, cur, new, request.params)
        return reply(scale_of(stored))

    def new_scale(self, request: kmock.Request, route: Route, cur: dict[str, Any]) -> dict[str, Any]:
        """The Scale a PUT or PATCH of `cur`'s scale subresource asks for, checked."""
        method = request.method.value
        if method not in ("PUT", "PATCH"):
            raise api_error(405, "MethodNotAllowed", "the scale subresource takes GET, PUT and PATCH")
        assert route.name is not None
        content_type = content_type_of(request)
        body = request.data
        new_scale = body if method == "PUT" else patched(route.kind, route.name, content_type, scale_of(cur), body)
        if not isinstance(new_scale, dict):
            raise bad_request("the body of the request must be a JSON object")
        replicas = (new_scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise invalid(route.kind, route.name, "spec.replicas: Invalid value: must be greater than or equal to 0")
        return new_scale

    # ---------------------------------------------------------------------------------------------
    # Validating admission webhooks

    async def serve_admitted(self, request: kmock.Request, route: Route) -> aiohttp.web.StreamResponse:
        """A request, first shown to the validating admission webhooks it matches (see
        `admit`); their warnings go back as `Warning: 299 - "…"` headers, as kubectl prints them."""
        warnings = await self.admit(request, route)
        response = await self.serve(request, route)
        for warning in warnings:
            response.headers.add("Warning", f'299 - "{warning.replace(chr(34), chr(39))}"')
        return response

    async def admit(self, request: kmock.Request, route: Route) -> list[str]:
        """As kube-apiserver's ValidatingAdmissionWebhook plugin, for creates and updates (PUT,
        PATCH) of a resource and updates of its `scale` subresource: each webhook of every
        `admissionregistration.k8s.io/v1` ValidatingWebhookConfiguration whose rules (groups,
        versions, operations, `resource` or `resource/scale`) and namespaceSelector (on the
        namespace's labels, `kubernetes.io/metadata.name` included) match is sent an
        AdmissionReview v1 over HTTPS: to `clientConfig.url`, or to its Service's endpoint
        (`POST /standin/endpoints`) verifying the certificate for `NAME.NAMESPACE.svc` against
        `caBundle`, within `timeoutSeconds` (default 10). A denial is 403; a webhook that fails
        (unreachable, no endpoint, timed out, a bad answer) is skipped with `failurePolicy:
        Ignore` and is 500 otherwise. The object it is shown is the write's result, computed as
        a dry run. Not modelled: `matchPolicy` conversion, `objectSelector`, `matchConditions`,
        mutating webhooks, reinvocation."""
        method = request.method.value
        if method not in ("POST", "PUT", "PATCH") or route.subresource not in (None, "scale") or params_dry(request):
            return []
        operation = "CREATE" if method == "POST" else "UPDATE"
        if route.subresource == "scale" and operation == "CREATE":
            return []
        kind = route.kind
        resource = kind.plural + ("/scale" if route.subresource == "scale" else "")
        hooks = [h for h in self.webhooks() if rule_matches(h, kind, resource, operation)]
        namespace = route.namespace or ""
        hooks = [h for h in hooks if not kind.namespaced or label_selected(h.get("namespaceSelector"), self.namespace_labels(namespace))]
        if not hooks:
            return []
        old: dict[str, Any] | None = None
        if route.subresource == "scale":
            cur = self.existing(attrs.evolve(route, subresource=None))
            new, old = self.new_scale(request, route, cur), scale_of(cur)
            gvk = {"group": "autoscaling", "version": "v1", "kind": "Scale"}
        else:
            dry = {**request.params, "dryRun": "All"}
            if method == "POST":
                new = await self.create(route, request.data, dry)
            else:
                old = self.current(kind, route.namespace, route.name or "")
                new = await (self.replace(route, request.data, dry) if method == "PUT" else self.patch(
                    route, content_type_of(request), request.data, dry))
            gvk = {"group": kind.group, "version": kind.version, "kind": kind.kind}
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "kind": gvk,
                "resource": {"group": kind.group, "version": kind.version, "resource": kind.plural},
                "requestKind": gvk,
                "requestResource": {"group": kind.group, "version": kind.version, "resource": kind.plural},
                **({"subResource": route.subresource, "requestSubResource": route.subresource} if route.subresource else {}),
                "name": new.get("metadata", {}).get("name") or route.name or "",
                "namespace": namespace,
                "operation": operation,
                "userInfo": {"username": "standin-user", "groups": ["system:authenticated"]},
                "object": new,
                "oldObject": old,
                "dryRun": False,
            },
        }
        warnings: list[str] = []
        for hook in hooks:
            warnings += await self.call_webhook(hook, review)
        return warnings

    def webhooks(self) -> list[dict[str, Any]]:
        kind = self.kinds.get(("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations"))
        if kind is None:
            return []
        return [h for config in self.all_of(kind, None) for h in config.get("webhooks") or []]

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        obj = self.current(self.kinds["", "v1", "namespaces"], None, namespace) if namespace else None
        labels = dict(((obj or {}).get("metadata") or {}).get("labels") or {})
        labels["kubernetes.io/metadata.name"] = namespace
        return labels

    async def call_webhook(self, hook: dict[str, Any], review: dict[str, Any]) -> list[str]:
        name = hook.get("name", "")
        client = hook.get("clientConfig") or {}
        timeout = float(hook.get("timeoutSeconds") or 10)
        ignore = hook.get("failurePolicy") == "Ignore"
        try:
            if client.get("url"):
                url, server_hostname = client["url"], None
            else:
                service = client.get("service") or {}
                key = (service.get("namespace", ""), service.get("name", ""))
                address = self.endpoints.get(key)
                if address is None:
                    raise ConnectionError(f'no endpoints available for service "{key[1]}"')
                url = f"https://{address}{service.get('path') or ''}"
                server_hostname = f"{key[1]}.{key[0]}.svc"
            bundle = client.get("caBundle")
            context = ssl.create_default_context(cadata=base64.b64decode(bundle).decode() if bundle else None)
            started = asyncio.get_running_loop().time()
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
                async with session.post(url, json=review, ssl=context, server_hostname=server_hostname) as answer:
                    if answer.status != 200:
                        raise ValueError(f"the webhook answered {answer.status}")
                    body = await answer.json(content_type=None)
            log(f"  webhook {name} answered in {asyncio.get_running_loop().time() - started:.3f}s")
            response = body.get("response") or {}
            if response.get("uid") != review["request"]["uid"]:
                raise ValueError("the webhook's response is for another request (uid)")
        except Exception as e:  # noqa: BLE001 -- any failure of the call is the webhook failing
            log(f"  failed calling webhook {name}: {type(e).__name__}: {e}" + ("; ignored (failurePolicy: Ignore)" if ignore else ""))
            if ignore:
                return []
            raise api_error(500, "InternalError", f'Internal error occurred: failed calling webhook "{name}": {e}') from None
        if not response.get("allowed"):
            message = (response.get("status") or {}).get("message") or ""
            raise api_error(403, "Forbidden", f'admission webhook "{name}" denied the request: {message}')
        return [str(w) for w in response.get("warnings") or []]

    async def shutdown(self) -> None:
        self.stopping = True
        async with self.changed:
            self.changed.notify_all()


# -------------------------------------------------------------------------------------------------
# Field ownership for server-side apply, kept in metadata.managedFields (FieldsV1, lists atomic)

Path = tuple[str, ...]
Owners = dict[tuple[str, str], set[Path]]  # (manager, subresource) -> the fields it applied
NOT_OWNED = {("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace")}
SERVER_FIELDS = {
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
}


def leaf_paths(obj: dict[str, Any], prefix: Path = ()) -> set[Path]:
    found: set[Path] = set()
    for key, value in obj.items():
        path = prefix + (key,)
        if path in NOT_OWNED or (prefix == ("metadata",) and key in SERVER_FIELDS):
            continue
        if isinstance(value, dict) and value:
            found |= leaf_paths(value, path)
        else:
            found.add(path)
    return found


def path_value(obj: Any, path: Path) -> tuple[bool, Any]:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return False, None
        obj = obj[key]
    return True, obj


def delete_path(obj: dict[str, Any], path: Path) -> None:
    parents = [obj]
    for key in path[:-1]:
        child = parents[-1].get(key)
        if not isinstance(child, dict):
            return
        parents.append(child)
    parents[-1].pop(path[-1], None)
    for depth in range(len(path) - 1, 1, -1):  # drop the maps this emptied, below the top level
        if parents[depth]:
            break
        parents[depth - 1].pop(path[depth - 1], None)


def read_owners(obj: dict[str, Any]) -> Owners:
    owners: Owners = {}
    for entry in obj.get("metadata", {}).get("managedFields") or []:
        if entry.get("operation") == "Apply" and entry.get("manager"):
            key = (entry["manager"], entry.get("subresource", ""))
            owners[key] = fields_to_paths(entry.get("fieldsV1") or {})
    return owners


def write_owners(obj: dict[str, Any], owners: Owners, kind: Kind) -> None:
    entries = []
    for (manager, subresource), paths in sorted(owners.items()):
        if paths:
            entry = {
                "manager": manager,
                "operation": "Apply",
                "apiVersion": kind.api_version,
                "fieldsType": "FieldsV1",
                "fieldsV1": paths_to_fields(paths),
            }
            if subresource:
                entry["subresource"] = subresource
            entries.append(entry)
    if entries:
        obj["metadata"]["managedFields"] = entries
    else:
        obj["metadata"].pop("managedFields", None)


def paths_to_fields(paths: set[Path]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for key in path:
            node = node.setdefault(f"f:{key}", {})
    return tree


def fields_to_paths(tree: dict[str, Any], prefix: Path = ()) -> set[Path]:
    paths: set[Path] = set()
    for key, child in tree.items():
        if not key.startswith("f:"):
            continue
        path = prefix + (key[2:],)
        paths |= fields_to_paths(child, path) if child else {path}
    return paths


def normalize(kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
    """What the API server itself changes in a written object: a Secret's stringData moves to data."""
    if kind.group == "" and kind.plural == "secrets" and isinstance(obj.get("stringData"), dict):
        data = obj.get("data") if isinstance(obj.get("data"), dict) else {}
        for key, value in obj.pop("stringData").items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        obj["data"] = data
    return obj


def spec_of(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def params_dry(request: kmock.Request) -> bool:
    return bool(request.params.get("dryRun"))


def content_type_of(request: kmock.Request) -> str:
    raw = request._raw_request
    return (raw.headers.get("Content-Type", "") if raw is not None else "").split(";")[0].strip().lower()


def rule_matches(hook: dict[str, Any], kind: Kind, resource: str, operation: str) -> bool:
    """Whether one of a webhook's rules names this group, version, operation and resource
    (`deployments`, `deployments/scale`; `*` and `*/scale` too)."""
    for rule in hook.get("rules") or []:
        within = lambda values, value: "*" in (values or []) or value in (values or [])  # noqa: E731
        base, _, sub = resource.partition("/")
        resources = rule.get("resources") or []
        named = resource in resources or (not sub and "*" in resources) or (sub and f"*/{sub}" in resources)
        if within(rule.get("apiGroups"), kind.group) and within(rule.get("apiVersions"), kind.version) \
                and within(rule.get("operations"), operation) and named:
            return True
    return False


def label_selected(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels, matchExpressions with In, NotIn, Exists, DoesNotExist)."""
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, op, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


# The kinds with a `scale` subresource (the HPA's and `kubectl scale`'s way in).
SCALABLE = {("apps", "deployments"), ("apps", "statefulsets"), ("apps", "replicasets")}


def has_scale(kind: Kind, subresource: str | None) -> bool:
    return subresource == "scale" and (kind.group, kind.plural) in SCALABLE


def scale_of(obj: dict[str, Any]) -> dict[str, Any]:
    """An object's `autoscaling/v1` Scale: its replicas (1 when unset, as the API server's
    defaulting would have made them), the replicas its controller counts and its selector."""
    meta = obj["metadata"]
    spec = obj.get("spec") or {}
    labels = (spec.get("selector") or {}).get("matchLabels") or {}
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in meta},
        "spec": {"replicas": spec.get("replicas", 1)},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        },
    }


def metadata_of(obj: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": META_API_VERSION, "kind": "PartialObjectMetadata", "metadata": obj.get("metadata", {})}


def reply(obj: dict[str, Any], meta_only: bool = False, status: int = 200) -> aiohttp.web.Response:
    if meta_only and obj.get("kind") != "Status" and "items" not in obj:
        obj = metadata_of(obj)
    return aiohttp.web.json_response(obj, status=status)


_quiet = False


def log(line: str) -> None:
    if not _quiet:
        print(f"standin: {line}", file=sys.stderr, flush=True)


# -------------------------------------------------------------------------------------------------
# Main


async def serve(
    port: int, host: str, crds: list[pathlib.Path], watch_stdin: bool, streaming_lists: bool, watch_progress: bool
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if watch_stdin:

        def wait_for_eof() -> None:
            while sys.stdin.buffer.read(4096):
                pass
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=wait_for_eof, daemon=True).start()

    handler = Standin(crds=crds, streaming_lists=streaming_lists, watch_progress=watch_progress)
    async with handler, kmock.Server(handler, host=host, port=port) as server:
        print(f"ready http://{host}:{server.port}", flush=True)
        await stop.wait()
        await handler.shutdown()
    log("stopped")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="the port to listen on; 0 picks a free one")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--crd",
        type=pathlib.Path,
        action="append",
        help="a CRD YAML file whose resources to serve (repeatable; default: crds/*.yaml of the repository)",
    )
    parser.add_argument("--watch-stdin", action="store_true", help="exit when standard input closes")
    parser.add_argument("--quiet", action="store_true", help="do not log requests on stderr")
    parser.add_argument(
        "--no-streaming-lists",
        action="store_true",
        help="refuse watches that ask for their initial list as events (sendInitialEvents), as an API "
        "server without the WatchList feature does",
    )
    parser.add_argument(
        "--no-watch-progress",
        action="store_true",
        help="accept watches that ask for their initial list as events (sendInitialEvents), then fail "
        "them inside the stream with a 500 InternalError, as an API server whose storage cannot request "
        "watch progress (RequestWatchProgress) does",
    )
    args = parser.parse_args()
    global _quiet
    _quiet = args.quiet
    crds = args.crd if args.crd is not None else sorted((REPO / "crds").glob("*.yaml"))
    asyncio.run(
        serve(args.port, args.host, crds, args.watch_stdin, not args.no_streaming_lists, not args.no_watch_progress)
    )


if __name__ == "__main__":
    main()
