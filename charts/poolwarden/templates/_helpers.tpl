{{/* The chart name, or nameOverride. */}}
{{- define "poolwarden.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name of every resource: fullnameOverride, else the release name (plus the chart
name unless the release name already contains it). */}}
{{- define "poolwarden.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "poolwarden.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "poolwarden.selectorLabels" -}}
app.kubernetes.io/name: {{ include "poolwarden.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "poolwarden.labels" -}}
helm.sh/chart: {{ include "poolwarden.chart" . }}
{{ include "poolwarden.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: controller
app.kubernetes.io/part-of: poolwarden
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "poolwarden.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "poolwarden.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "poolwarden.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Leader election is forced on with more than one replica: two acting controllers would each
terminate sessions and fight over annotations. Renders "true" or "false". */}}
{{- define "poolwarden.leaderElection" -}}
{{- if or .Values.controller.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ else }}false{{ end }}
{{- end }}

{{- define "poolwarden.leaseName" -}}
{{- default (include "poolwarden.fullname" .) .Values.controller.leaderElection.leaseName }}
{{- end }}

{{/*
What the controller does with the API, and nothing more. Shared by the ClusterRole (all
namespaces) and the Role of each watched namespace (namespaced mode). Leases are separate: a Role
in the release namespace only (leader-election-rbac.yaml).
*/}}
{{- define "poolwarden.rules" -}}
# The PoolPolicies themselves: read (get, and list/watch for the controller's cache), and given
# or relieved of the finalizer poolwarden.io/cleanup by JSON patch.
- apiGroups: ["poolwarden.io"]
  resources: ["poolpolicies"]
  verbs: ["get", "list", "watch", "patch"]
# Status is written by server-side apply (field manager "poolwarden").
- apiGroups: ["poolwarden.io"]
  resources: ["poolpolicies/status"]
  verbs: ["get", "patch"]
# Setting finalizers on a PoolPolicy (needed where OwnerReferencesPermissionEnforcement is on).
- apiGroups: ["poolwarden.io"]
  resources: ["poolpolicies/finalizers"]
  verbs: ["update"]
{{- if .Values.controller.watchSecrets }}
# The database URL of a policy, read from the Secret it names in its own namespace; list/watch
# (metadata only, the data is never cached) so that a rotated credential re-triggers the policy.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
{{- else }}
# The database URL of a policy, read from the Secret it names in its own namespace
# (controller.watchSecrets is off: no list/watch).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
# Pods: listed and watched to attribute sessions (pod IP, application_name = pod name); a bare
# pod is its own workload and may be annotated (merge patch of poolwarden.io/* annotations).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "patch"]
# Owner chains from a pod up to its workload (ReplicaSets as metadata only; Deployments,
# StatefulSets and DaemonSets whole, for their replicas and rollout strategy: a workload's largest
# scale); the workload found leaking gets the poolwarden.io/leak, leak-detail and policy
# annotations by merge patch. Once it no longer carries them, the copies its controller made (the
# Deployment controller copies a Deployment's annotations onto its ReplicaSets and never removes
# one) are taken off by merge patch too.
- apiGroups: ["apps"]
  resources: ["replicasets", "deployments", "statefulsets", "daemonsets"]
  verbs: ["list", "watch", "patch"]
# HorizontalPodAutoscalers, read only: the maxReplicas of the one that targets a workload is its
# largest scale, which Overbooked counts (KEDA's ScaledObjects work through such an HPA).
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["list", "watch"]
- apiGroups: ["batch"]
  resources: ["jobs", "cronjobs"]
  verbs: ["list", "watch", "patch"]
{{- if .Values.rbac.evictPods }}
# Evictions (rbac.evictPods): the pod of a pinned pool that Enforce ended, for PoolPolicies with
# spec.remediation.pinnedPools: Evict, through the Eviction API (PodDisruptionBudgets honoured;
# nothing is ever deleted directly).
- apiGroups: [""]
  resources: ["pods/eviction"]
  verbs: ["create"]
{{- end }}
# Events: Warning ConnectionLeak on workloads, Normal SessionsTerminated on PoolPolicies; patch
# updates the count of a repeated Event.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/*
The namespaces whose changes the webhook is sent: webhook.namespaceSelector, else those of
controller.namespaces, else every namespace but the system ones and the release's own.
*/}}
{{- define "poolwarden.webhookNamespaceSelector" -}}
{{- if .Values.webhook.namespaceSelector }}
{{- toYaml .Values.webhook.namespaceSelector }}
{{- else if .Values.controller.namespaces }}
matchExpressions:
  - key: kubernetes.io/metadata.name
    operator: In
    values: {{ toJson .Values.controller.namespaces }}
{{- else }}
matchExpressions:
  - key: kubernetes.io/metadata.name
    operator: NotIn
    values: ["kube-system", "kube-public", "kube-node-lease", {{ .Release.Namespace | quote }}]
{{- end }}
{{- end }}
