{{/* Names ------------------------------------------------------------------------------------ */}}

{{- define "oraculum.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<chart>, or the release name alone when it contains the chart name. Kept
to 40 characters so that "<fullname>-preprocess-hook" and the like stay valid names. */}}
{{- define "oraculum.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "oraculum.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels: include "oraculum.labels" (list $ "component") */}}
{{- define "oraculum.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ include "oraculum.chart" $root }}
{{ include "oraculum.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: oraculum
{{- with $root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "oraculum.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "oraculum.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "oraculum.operatorServiceAccount" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (printf "%s-operator" (include "oraculum.fullname" .)) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "oraculum.apiServiceAccount" -}}
{{- if .Values.api.serviceAccount.create }}
{{- default (printf "%s-api" (include "oraculum.fullname" .)) .Values.api.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.api.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The worker pods' service account; empty means the namespace's default. */}}
{{- define "oraculum.workerServiceAccount" -}}
{{- if .Values.workers.serviceAccount.create }}
{{- default (printf "%s-worker" (include "oraculum.fullname" .)) .Values.workers.serviceAccount.name }}
{{- else }}
{{- .Values.workers.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "oraculum.settingsConfigMap" -}}
{{- printf "%s-settings" (include "oraculum.fullname" .) }}
{{- end }}

{{/* The Secret with ORACULUM_S3_ACCESS_KEY / ORACULUM_S3_SECRET_KEY (the Jobs' envFrom). */}}
{{- define "oraculum.s3Secret" -}}
{{- if and (not .Values.minio.enabled) .Values.externalS3.existingSecret }}
{{- .Values.externalS3.existingSecret }}
{{- else }}
{{- printf "%s-s3" (include "oraculum.fullname" .) }}
{{- end }}
{{- end }}

{{/* Does the chart create the S3 Secret (bundled MinIO, or external credentials given as values)? */}}
{{- define "oraculum.createS3Secret" -}}
{{- if or .Values.minio.enabled (not .Values.externalS3.existingSecret) }}true{{ end }}
{{- end }}

{{- define "oraculum.tokensSecret" -}}
{{- default (printf "%s-api-tokens" (include "oraculum.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{/* Redis: the Secret and key holding ORACULUM_REDIS_URL; empty when there is no Redis. */}}
{{- define "oraculum.redisSecret" -}}
{{- if .Values.redis.enabled }}
{{- printf "%s-redis" (include "oraculum.fullname" .) }}
{{- else if .Values.externalRedis.existingSecret }}
{{- .Values.externalRedis.existingSecret }}
{{- else if .Values.externalRedis.url }}
{{- printf "%s-redis" (include "oraculum.fullname" .) }}
{{- end }}
{{- end }}

{{- define "oraculum.redisSecretKey" -}}
{{- if and (not .Values.redis.enabled) .Values.externalRedis.existingSecret }}
{{- .Values.externalRedis.existingSecretKey }}
{{- else }}redis-url{{- end }}
{{- end }}

{{/* Namespaces where experiments run: the release namespace, the API's and operator.namespaces,
each once (a JSON list; fromJsonArray it). */}}
{{- define "oraculum.namespaces" -}}
{{- $all := list .Release.Namespace (include "oraculum.apiNamespace" .) }}
{{- range .Values.operator.namespaces }}
{{- $all = append $all . }}
{{- end }}
{{- toJson (uniq $all) }}
{{- end }}

{{- define "oraculum.apiNamespace" -}}
{{- default .Release.Namespace .Values.api.namespace }}
{{- end }}

{{/* Images ----------------------------------------------------------------------------------- */}}

{{/* include "oraculum.imageRef" (list $ .Values.image) -> registry/repository:tag@digest */}}
{{- define "oraculum.imageRef" -}}
{{- $root := index . 0 }}
{{- $image := index . 1 }}
{{- $repository := $image.repository }}
{{- if $image.registry }}{{ $repository = printf "%s/%s" $image.registry $image.repository }}{{ end }}
{{- $tag := default $root.Chart.AppVersion $image.tag | toString }}
{{- if $image.digest }}
{{- printf "%s:%s@%s" $repository $tag $image.digest }}
{{- else }}
{{- printf "%s:%s" $repository $tag }}
{{- end }}
{{- end }}

{{- define "oraculum.image" -}}
{{- include "oraculum.imageRef" (list . .Values.image) }}
{{- end }}

{{- define "oraculum.workerImage" -}}
{{- if .Values.workers.image.repository }}
{{- include "oraculum.imageRef" (list . .Values.workers.image) }}
{{- else }}
{{- include "oraculum.image" . }}
{{- end }}
{{- end }}

{{- define "oraculum.gpuImage" -}}
{{- if .Values.workers.gpuImage.repository }}
{{- include "oraculum.imageRef" (list . .Values.workers.gpuImage) }}
{{- else }}
{{- include "oraculum.workerImage" . }}
{{- end }}
{{- end }}

{{/* Store and cache endpoints --------------------------------------------------------------- */}}

{{- define "oraculum.storeUrl" -}}
{{- if .Values.store.prefix }}
{{- printf "s3://%s/%s" .Values.store.bucket (trimAll "/" .Values.store.prefix) }}
{{- else }}
{{- printf "s3://%s" .Values.store.bucket }}
{{- end }}
{{- end }}

{{/* Fully qualified service names: worker Jobs may run in other namespaces. */}}
{{- define "oraculum.s3Endpoint" -}}
{{- if .Values.minio.enabled }}
{{- printf "http://%s-minio.%s.svc:9000" (include "oraculum.fullname" .) .Release.Namespace }}
{{- else }}
{{- required "externalS3.endpoint is required when minio.enabled is false (or enable the bundled MinIO)" .Values.externalS3.endpoint }}
{{- end }}
{{- end }}

{{/* The API as pods reach it inside the cluster (the dashboard; running Jobs report progress there). */}}
{{- define "oraculum.apiUrl" -}}
{{- printf "http://%s-api.%s.svc:%v" (include "oraculum.fullname" .) .Release.Namespace .Values.api.service.port }}
{{- end }}

{{- define "oraculum.ingressPrefix" -}}
{{- trimSuffix "/" .Values.ingress.path }}
{{- end }}

{{/* Generated secrets ------------------------------------------------------------------------ */}}

{{/* include "oraculum.secretValue" (list $ secretName key givenValue length): the given value, else
the value already in the release namespace's Secret (kept across upgrades), else a new random
one. Memoised per render, so copies of a Secret in several namespaces agree. */}}
{{- define "oraculum.secretValue" -}}
{{- $root := index . 0 }}
{{- $secret := index . 1 }}
{{- $key := index . 2 }}
{{- $given := index . 3 }}
{{- $length := index . 4 }}
{{- if not (hasKey $root.Values "__generated") }}
{{- $_ := set $root.Values "__generated" dict }}
{{- end }}
{{- $cache := get $root.Values "__generated" }}
{{- $memo := printf "%s/%s" $secret $key }}
{{- if not (hasKey $cache $memo) }}
{{- $value := $given | toString }}
{{- if not $given }}
{{- $existing := lookup "v1" "Secret" $root.Release.Namespace $secret }}
{{- if and $existing (hasKey (default dict $existing.data) $key) }}
{{- $value = index $existing.data $key | b64dec }}
{{- else }}
{{- $value = randAlphaNum (int $length) }}
{{- end }}
{{- end }}
{{- $_ := set $cache $memo $value }}
{{- end }}
{{- get $cache $memo }}
{{- end }}

{{- define "oraculum.s3AccessKey" -}}
{{- if .Values.minio.enabled }}
{{- include "oraculum.secretValue" (list . (include "oraculum.s3Secret" .) "ORACULUM_S3_ACCESS_KEY" .Values.minio.rootUser 20) }}
{{- else }}
{{- required "externalS3.accessKey (or externalS3.existingSecret) is required when minio.enabled is false" .Values.externalS3.accessKey }}
{{- end }}
{{- end }}

{{- define "oraculum.s3SecretKey" -}}
{{- if .Values.minio.enabled }}
{{- include "oraculum.secretValue" (list . (include "oraculum.s3Secret" .) "ORACULUM_S3_SECRET_KEY" .Values.minio.rootPassword 40) }}
{{- else }}
{{- required "externalS3.secretKey (or externalS3.existingSecret) is required when minio.enabled is false" .Values.externalS3.secretKey }}
{{- end }}
{{- end }}

{{/* The worker token Jobs report progress with: the auth.tokens entry named workers.progress.tokenName
if there is one, else generated into the tokens Secret (and kept across upgrades like the others). */}}
{{- define "oraculum.workerToken" -}}
{{- $name := .Values.workers.progress.tokenName }}
{{- $given := "" }}
{{- range .Values.auth.tokens }}
{{- if eq .name $name }}{{ $given = .token }}{{ end }}
{{- end }}
{{- include "oraculum.secretValue" (list . (include "oraculum.tokensSecret" .) $name $given 40) }}
{{- end }}

{{/* The Secret (in the API's namespace) Jobs read the worker token from; empty: Jobs do not report. */}}
{{- define "oraculum.progressSecret" -}}
{{- if .Values.workers.progress.enabled }}
{{- if .Values.auth.existingSecret }}
{{- .Values.workers.progress.existingSecret }}
{{- else }}
{{- printf "%s-worker-token" (include "oraculum.fullname" .) }}
{{- end }}
{{- end }}
{{- end }}

{{- define "oraculum.progressSecretKey" -}}
{{- if .Values.auth.existingSecret }}{{ .Values.workers.progress.existingSecretKey }}{{ else }}token{{ end }}
{{- end }}

{{- define "oraculum.redisPassword" -}}
{{- include "oraculum.secretValue" (list . (include "oraculum.redisSecret" .) "redis-password" .Values.redis.password 32) }}
{{- end }}

{{/* Security contexts ------------------------------------------------------------------------ */}}

{{/* include "oraculum.podSecurityContext" (int uid) */}}
{{- define "oraculum.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
fsGroup: {{ . }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "oraculum.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
{{- end }}

{{/* Environment of the oraculum processes: store settings and credentials by reference. */}}
{{- define "oraculum.storeEnvFrom" -}}
- configMapRef:
    name: {{ include "oraculum.settingsConfigMap" . }}
- secretRef:
    name: {{ include "oraculum.s3Secret" . }}
{{- end }}

{{/* Variables that point into the writable /tmp emptyDir (the root filesystem is read-only). */}}
{{- define "oraculum.tmpEnv" -}}
- name: HOME
  value: /tmp
- name: ORACULUM_CACHE_DIR
  value: /tmp/oraculum-cache
- name: MPLCONFIGDIR
  value: /tmp/matplotlib
{{- end }}

{{- define "oraculum.redisEnv" -}}
{{- if include "oraculum.redisSecret" . }}
- name: ORACULUM_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "oraculum.redisSecret" . }}
      key: {{ include "oraculum.redisSecretKey" . }}
{{- end }}
{{- end }}

{{/* Checks that the schema cannot express; fail with a message that says what to change. */}}
{{- define "oraculum.validate" -}}
{{- if and (not .Values.minio.enabled) (not .Values.externalS3.endpoint) }}
{{- fail "externalS3.endpoint is required when minio.enabled is false (or enable the bundled MinIO)" }}
{{- end }}
{{- if and (not .Values.minio.enabled) (not .Values.externalS3.existingSecret) (or (not .Values.externalS3.accessKey) (not .Values.externalS3.secretKey)) }}
{{- fail "with minio.enabled false, set externalS3.existingSecret (keys ORACULUM_S3_ACCESS_KEY, ORACULUM_S3_SECRET_KEY) or externalS3.accessKey and externalS3.secretKey" }}
{{- end }}
{{- if and (gt (int .Values.api.replicaCount) 1) (not (include "oraculum.redisSecret" .)) }}
{{- fail "api.replicaCount > 1 needs Redis for shared live state: set redis.enabled, externalRedis.url or externalRedis.existingSecret" }}
{{- end }}
{{- if and (gt (int .Values.api.workers) 1) (not (include "oraculum.redisSecret" .)) }}
{{- fail "api.workers > 1 needs Redis for shared live state: set redis.enabled, externalRedis.url or externalRedis.existingSecret" }}
{{- end }}
{{- $seen := dict }}
{{- range .Values.auth.tokens }}
{{- if hasKey $seen .name }}
{{- fail (printf "auth.tokens: the name %q is used more than once" .name) }}
{{- end }}
{{- $_ := set $seen .name true }}
{{- if and $.Values.workers.progress.enabled (eq .name $.Values.workers.progress.tokenName) (ne .role "worker") }}
{{- fail (printf "auth.tokens: %q is the Jobs' progress token (workers.progress.tokenName): give it the role worker, or choose another workers.progress.tokenName" .name) }}
{{- end }}
{{- end }}
{{- if and .Values.ingress.enabled (ne .Values.ingress.path "/") (hasSuffix "/" .Values.ingress.path) }}
{{- fail "ingress.path must not end with a slash (use \"/\" or e.g. \"/oraculum\")" }}
{{- end }}
{{- end }}
