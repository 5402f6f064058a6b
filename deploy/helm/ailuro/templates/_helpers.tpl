{{/* Names, labels and the parts every workload shares. */}}

{{- define "ailuro.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ailuro.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: include "ailuro.selector" (list . "web") */}}
{{- define "ailuro.selector" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ $root.Chart.Name }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "ailuro.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ailuro.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "ailuro.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The non-secret settings: the ConfigMap's data, and the migrations hook's env (a pre-install
hook runs before the ConfigMap exists). */}}
{{- define "ailuro.config" -}}
ALLOWED_HOSTS: {{ join "," .Values.config.allowedHosts | quote }}
CSRF_TRUSTED_ORIGINS: {{ join "," .Values.config.csrfTrustedOrigins | quote }}
AILURO_HTTPS: {{ .Values.config.https | toString | quote }}
AILURO_BEHIND_PROXY: {{ .Values.config.behindProxy | toString | quote }}
AILURO_TRUSTED_PROXIES: {{ join "," .Values.config.trustedProxies | quote }}
AILURO_ANONYMOUS_READ: {{ .Values.config.anonymousRead | toString | quote }}
AILURO_LOG_LEVEL: {{ .Values.config.logLevel | quote }}
AILURO_MAX_SPEC_BYTES: {{ .Values.config.maxSpecBytes | int64 | toString | quote }}
AILURO_DATA_DIR: "/var/lib/ailuro"
# prometheus_client's multi-process mode: the processes of a pod sum their counters there (/tmp is
# the pod's own emptyDir).
PROMETHEUS_MULTIPROC_DIR: "/tmp/prometheus"
{{- with .Values.config.harvesterServerUrl }}
AILURO_HARVESTER_SERVER_URL: {{ . | quote }}
{{- end }}
{{- if .Values.oidc.enabled }}
OIDC_ISSUER: {{ required "oidc.issuer is required when oidc.enabled" .Values.oidc.issuer | quote }}
OIDC_RP_CLIENT_ID: {{ required "oidc.clientId is required when oidc.enabled" .Values.oidc.clientId | quote }}
OIDC_AUDIENCE: {{ join "," .Values.oidc.audience | quote }}
OIDC_CLI_CLIENT_ID: {{ .Values.oidc.cliClientId | quote }}
{{- $pairs := list }}
{{- range $group, $role := .Values.oidc.roleGroups }}
{{- $pairs = append $pairs (printf "%s=%s" $group $role) }}
{{- end }}
OIDC_ROLE_GROUPS: {{ join "," $pairs | quote }}
{{- end }}
{{- range $name, $value := .Values.config.extra }}
{{ $name }}: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* env entries read from the existing Secrets. */}}
{{- define "ailuro.secretEnv" -}}
{{- $default := .Values.secrets.existingSecret -}}
{{- $entries := dict "SECRET_KEY" .Values.secrets.secretKey "DATABASE_URL" .Values.secrets.databaseUrl "CELERY_BROKER_URL" .Values.secrets.brokerUrl "AILURO_CACHE_URL" .Values.secrets.cacheUrl -}}
{{- if .Values.oidc.enabled -}}
{{- $_ := set $entries "OIDC_RP_CLIENT_SECRET" .Values.secrets.oidcClientSecret -}}
{{- end -}}
{{- range $name := keys $entries | sortAlpha }}
{{- $ref := get $entries $name }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ required (printf "a Secret name for %s: secrets.existingSecret or its own name" $name) (default $default $ref.name) }}
      key: {{ $ref.key }}
{{- end }}
{{- end -}}

{{/* Container env of the long-running workloads: the ConfigMap plus the Secrets. */}}
{{- define "ailuro.env" -}}
envFrom:
  - configMapRef:
      name: {{ include "ailuro.fullname" . }}
env:
{{- include "ailuro.secretEnv" . | nindent 2 }}
{{- end -}}

{{- define "ailuro.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "ailuro.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Writable places on a read-only root: /tmp and the data folder (harvester work folders, beat's
schedule file). */}}
{{- define "ailuro.volumes" -}}
- name: tmp
  emptyDir: {}
- name: data
  emptyDir: {}
{{- end -}}

{{- define "ailuro.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: /var/lib/ailuro
{{- end -}}

{{/* Pod annotations: a config checksum (a changed ConfigMap rolls the pods) and the user's own. */}}
{{- define "ailuro.podAnnotations" -}}
checksum/config: {{ include "ailuro.config" . | sha256sum }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The probes of a web pod's container: startup and liveness on /healthz, readiness on the given
path, on the given port name, with the Host header of the first allowed host. Called with
(list . portName readinessPath). */}}
{{- define "ailuro.webProbes" -}}
{{- $ := index . 0 -}}
{{- $port := index . 1 -}}
{{- $host := first $.Values.config.allowedHosts | quote -}}
startupProbe:
  httpGet: {path: /healthz, port: {{ $port }}, httpHeaders: [{name: Host, value: {{ $host }}}]}
  periodSeconds: {{ $.Values.web.startupProbe.periodSeconds }}
  failureThreshold: {{ $.Values.web.startupProbe.failureThreshold }}
livenessProbe:
  httpGet: {path: /healthz, port: {{ $port }}, httpHeaders: [{name: Host, value: {{ $host }}}]}
  periodSeconds: {{ $.Values.web.livenessProbe.periodSeconds }}
  timeoutSeconds: {{ $.Values.web.livenessProbe.timeoutSeconds }}
  failureThreshold: {{ $.Values.web.livenessProbe.failureThreshold }}
readinessProbe:
  httpGet: {path: {{ index . 2 | quote }}, port: {{ $port }}, httpHeaders: [{name: Host, value: {{ $host }}}]}
  periodSeconds: {{ $.Values.web.readinessProbe.periodSeconds }}
  timeoutSeconds: {{ $.Values.web.readinessProbe.timeoutSeconds }}
  failureThreshold: {{ $.Values.web.readinessProbe.failureThreshold }}
{{- end -}}
