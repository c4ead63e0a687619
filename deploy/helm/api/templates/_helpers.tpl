{{/* Names: the release's, at most 63 characters as DNS labels allow. */}}
{{- define "api.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "api.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* What selects one component's pods: (dict "root" $ "component" "app"). */}}
{{- define "api.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* A pod's labels: its selector, and the labels a data tier's own
     NetworkPolicy admits (every pod of the chart reaches PostgreSQL or Redis). */}}
{{- define "api.podLabels" -}}
{{ include "api.selector" . }}
{{- with .root.Values.appTierPodLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "api.image" -}}
{{- .repository }}:{{ .tag }}{{ with .digest }}@{{ . }}{{ end -}}
{{- end -}}

{{/* What every pod shares: never root, the runtime's seccomp profile, no
     service account token (nothing here talks to the Kubernetes API), no
     service links (variables nothing reads), and where it may run and pull from. */}}
{{- define "api.podCommon" -}}
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
  runAsNonRoot: true
  seccompProfile:
    type: RuntimeDefault
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* A container's securityContext; `.` is its user id (the image's own:
     10001 in the Dockerfile, 101 in nginx-unprivileged). */}}
{{- define "api.containerSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ . }}
  runAsGroup: {{ . }}
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  privileged: false
  capabilities:
    drop: ["ALL"]
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/* An environment value as settings.py parses it: YAML's numbers reach
     templates as floats, which would print 1e+06 for 1000000. */}}
{{- define "api.envValue" -}}
{{- if and (kindIs "float64" .) (eq (. | int64 | float64) .) -}}
{{- . | int64 | toString | quote -}}
{{- else -}}
{{- . | toString | quote -}}
{{- end -}}
{{- end -}}

{{/* The environment of every process of the image: the secrets by reference
     to existingSecret, and the settings of `config`. `.secrets` lists the
     Secret's keys this process needs. */}}
{{- define "api.env" -}}
{{- $root := .root -}}
{{- range .secrets }}
- name: {{ . }}
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.existingSecret }}
      key: {{ . }}
{{- end }}
{{- range $name, $value := $root.Values.config }}
- name: {{ $name }}
  value: {{ include "api.envValue" $value }}
{{- end }}
{{- end -}}

{{/* The secrets of the long-running processes; the migration adds MIGRATE_DATABASE_URL. */}}
{{- define "api.secretKeys" -}}
{{- list "SECRET_KEY" "DATABASE_URL" "REDIS_URL" "RATE_LIMIT_STORAGE_URL" "QUEUE_REDIS_URL" | toJson -}}
{{- end -}}

{{/* gunicorn's and Celery's processes write their metrics' samples into
     PROMETHEUS_MULTIPROC_DIR, which must be empty when the part starts
     (infra/metrics_server.py). An emptyDir outlives a container's restart
     within its pod, so each start empties it before exec. */}}
{{- define "api.freshMetricsDir" -}}
- sh
- -c
- 'find "$PROMETHEUS_MULTIPROC_DIR" -mindepth 1 -delete && exec "$@"'
- --
{{- end -}}
