{{- define "hitl.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hitl.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "hitl.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "hitl.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The gateway's settings: the referenced Secret, then the chart's own, then the operator's. */}}
{{- define "hitl.env" -}}
envFrom:
  - secretRef:
      name: {{ required "existingSecret: the Secret holding HITL_DATABASE_URL and HITL_SECRET_KEY" .Values.existingSecret }}
env:
  - name: HITL_DRAIN_SECONDS
    value: {{ .Values.drainSeconds | quote }}
  - name: HITL_SHUTDOWN_TIMEOUT
    value: {{ .Values.shutdownTimeoutSeconds | quote }}
  {{- range $name, $value := .Values.env }}
  - name: {{ $name }}
    value: {{ $value | quote }}
  {{- end }}
{{- end -}}

{{- define "hitl.security" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  allowPrivilegeEscalation: false
  capabilities:
    drop: ["ALL"]
{{- end -}}
