{{/* NetworkPolicy building blocks (templates/networkpolicy/*.yaml). Peers and rules are YAML list
items, so that a policy can put several together. */}}

{{/* The release's own pods (every Deployment, StatefulSet, hook and test pod of the chart). */}}
{{- define "oraculum.np.releasePods" -}}
app.kubernetes.io/name: {{ include "oraculum.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The operator's worker Job pods (oraculum.control.jobs labels them so). */}}
{{- define "oraculum.np.jobPods" -}}
app.kubernetes.io/name: oraculum
app.kubernetes.io/managed-by: oraculum-operator
{{- end }}

{{/* include "oraculum.np.component" (list $ "api" namespace): a peer, the pods of one component of
this release; seen from `namespace` (the release's own: no namespaceSelector). */}}
{{- define "oraculum.np.component" -}}
{{- $root := index . 0 }}
{{- $from := index . 2 }}
- podSelector:
    matchLabels:
      {{- include "oraculum.selectorLabels" (list $root (index . 1)) | nindent 6 }}
  {{- if ne $from $root.Release.Namespace }}
  namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ $root.Release.Namespace }}
  {{- end }}
{{- end }}

{{/* A peer: the worker Job pods in every namespace where experiments run. */}}
{{- define "oraculum.np.jobs" -}}
- podSelector:
    matchLabels:
      {{- include "oraculum.np.jobPods" . | trim | nindent 6 }}
  namespaceSelector:
    matchExpressions:
      - key: kubernetes.io/metadata.name
        operator: In
        values:
          {{- range include "oraculum.namespaces" . | fromJsonArray }}
          - {{ . }}
          {{- end }}
{{- end }}

{{/* Peers from a list of CIDRs: "10.0.0.0/8" or {cidr: ..., except: [...]}; empty: every address. */}}
{{- define "oraculum.np.cidrs" -}}
{{- $cidrs := . }}
{{- if not $cidrs }}{{ $cidrs = list "0.0.0.0/0" "::/0" }}{{ end }}
{{- range $cidrs }}
{{- if kindIs "string" . }}
- ipBlock:
    cidr: {{ . | quote }}
{{- else }}
- ipBlock:
    {{- toYaml . | nindent 4 }}
{{- end }}
{{- end }}
{{- end }}

{{/* include "oraculum.np.ports" (list "TCP" ports...) */}}
{{- define "oraculum.np.ports" -}}
{{- $protocol := index . 0 }}
{{- range (rest .) }}
- protocol: {{ $protocol }}
  port: {{ . }}
{{- end }}
{{- end }}

{{/* Egress rules -------------------------------------------------------------------------- */}}

{{/* The cluster DNS, UDP and TCP 53. */}}
{{- define "oraculum.np.egressDns" -}}
- to:
    - namespaceSelector:
        {{- toYaml .Values.networkPolicy.dns.namespaceSelector | nindent 8 }}
      podSelector:
        {{- toYaml .Values.networkPolicy.dns.podSelector | nindent 8 }}
  ports:
    {{- include "oraculum.np.ports" (list "UDP" 53) | trim | nindent 4 }}
    {{- include "oraculum.np.ports" (list "TCP" 53) | trim | nindent 4 }}
{{- end }}

{{/* The Kubernetes API server: not a pod, so addresses (networkPolicy.kubernetesApi). */}}
{{- define "oraculum.np.egressKubernetes" -}}
- to:
    {{- include "oraculum.np.cidrs" .Values.networkPolicy.kubernetesApi.cidrs | trim | nindent 4 }}
  ports:
    {{- include "oraculum.np.ports" (prepend .Values.networkPolicy.kubernetesApi.ports "TCP") | trim | nindent 4 }}
{{- end }}

{{/* The object store, as seen from `namespace`: the bundled MinIO's pods, or the external
endpoint's addresses (networkPolicy.objectStore.cidrs) on its port. include ... (list $ namespace) */}}
{{- define "oraculum.np.egressStore" -}}
{{- $root := index . 0 }}
{{- $values := $root.Values }}
{{- if $values.minio.enabled }}
- to:
    {{- include "oraculum.np.component" (list $root "minio" (index . 1)) | trim | nindent 4 }}
  ports:
    {{- include "oraculum.np.ports" (list "TCP" 9000) | trim | nindent 4 }}
{{- else }}
{{- $url := urlParse $values.externalS3.endpoint }}
{{- $port := $values.networkPolicy.objectStore.port }}
{{- if not $port }}
{{- $port = default (ternary 443 80 (eq $url.scheme "https")) (regexFind "[0-9]+$" (regexFind ":[0-9]+$" $url.host)) }}
{{- end }}
- to:
    {{- include "oraculum.np.cidrs" $values.networkPolicy.objectStore.cidrs | trim | nindent 4 }}
  ports:
    {{- include "oraculum.np.ports" (list "TCP" (int $port)) | trim | nindent 4 }}
{{- end }}
{{- end }}

{{/* Redis (the API only): the bundled one's pods, or an external one's addresses and port. */}}
{{- define "oraculum.np.egressRedis" -}}
{{- if .Values.redis.enabled }}
- to:
    {{- include "oraculum.np.component" (list . "redis" .Release.Namespace) | trim | nindent 4 }}
  ports:
    {{- include "oraculum.np.ports" (list "TCP" 6379) | trim | nindent 4 }}
{{- else if include "oraculum.redisSecret" . }}
{{- $port := .Values.networkPolicy.redis.port }}
{{- if and (not $port) .Values.externalRedis.url }}
{{- $port = regexFind "[0-9]+$" (regexFind ":[0-9]+$" (urlParse .Values.externalRedis.url).host) }}
{{- end }}
- to:
    {{- include "oraculum.np.cidrs" .Values.networkPolicy.redis.cidrs | trim | nindent 4 }}
  ports:
    {{- include "oraculum.np.ports" (list "TCP" (int (default 6379 $port))) | trim | nindent 4 }}
{{- end }}
{{- end }}

{{/* The archives the VO fetchers reach (API and preprocessing Jobs): networkPolicy.archives and
the addresses and CIDRs among fetch.allow, on networkPolicy.archivePorts (empty: any port). */}}
{{- define "oraculum.np.egressArchives" -}}
{{- $cidrs := list }}
{{- range .Values.networkPolicy.archives }}{{ $cidrs = append $cidrs . }}{{ end }}
{{- range .Values.fetch.allow }}
{{- $entry := . | toString | trim }}
{{- if regexMatch "^[0-9]{1,3}(\\.[0-9]{1,3}){3}(/[0-9]{1,2})?$" $entry }}
{{- $cidrs = append $cidrs (ternary $entry (printf "%s/32" $entry) (contains "/" $entry)) }}
{{- else if regexMatch "^[0-9A-Fa-f]*:[0-9A-Fa-f:.]*(/[0-9]{1,3})?$" $entry }}
{{- $cidrs = append $cidrs (ternary $entry (printf "%s/128" $entry) (contains "/" $entry)) }}
{{- end }}
{{- end }}
{{- if $cidrs }}
- to:
    {{- include "oraculum.np.cidrs" $cidrs | trim | nindent 4 }}
  {{- with .Values.networkPolicy.archivePorts }}
  ports:
    {{- include "oraculum.np.ports" (prepend . "TCP") | trim | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}

{{/* The API's pods, as seen from `namespace` (dashboard, helm test, Jobs' progress reports). */}}
{{- define "oraculum.np.egressApi" -}}
- to:
    {{- include "oraculum.np.component" (list (index . 0) "api" (index . 1)) | trim | nindent 4 }}
  ports:
    {{- include "oraculum.np.ports" (list "TCP" 8000) | trim | nindent 4 }}
{{- end }}

{{- define "oraculum.np.egressExtra" -}}
{{- with .Values.networkPolicy.extraEgress }}
{{ toYaml . }}
{{- end }}
{{- end }}
