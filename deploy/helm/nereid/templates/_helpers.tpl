{{- define "nereid.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "nereid.fullname" -}}
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

{{- define "nereid.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nereid.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "nereid.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "nereid.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "nereid.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "nereid.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "nereid.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.variant }}{{ $tag = printf "%s-%s" $tag .Values.image.variant }}{{ end }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{/* nereid's command line: Triton's flag names, one per line. */}}
{{- define "nereid.args" -}}
{{- $s := .Values.server }}
- --model-repository={{ .Values.modelRepository.mountPath }}
- --http-port={{ .Values.ports.http }}
- --allow-grpc={{ $s.allowGrpc }}
- --grpc-port={{ .Values.ports.grpc }}
- --allow-metrics={{ .Values.metrics.enabled }}
- --metrics-port={{ .Values.ports.metrics }}
- --model-control-mode={{ $s.modelControlMode }}
{{- range $s.loadModels }}
- --load-model={{ . }}
{{- end }}
{{- if eq $s.modelControlMode "poll" }}
- --repository-poll-secs={{ $s.repositoryPollSecs }}
{{- end }}
- --strict-readiness={{ $s.strictReadiness }}
- --exit-on-error={{ $s.exitOnError }}
- --exit-timeout-secs={{ $s.exitTimeoutSecs }}
- --log-verbose={{ $s.logVerbose }}
- --log-format={{ $s.logFormat }}
{{- with $s.modelCache }}
- --model-load-on-demand={{ .loadOnDemand }}
{{- if .memory }}
- --model-cache-memory={{ .memory }}
{{- end }}
- --model-idle-unload-secs={{ .idleUnloadSecs }}
{{- end }}
{{- range $s.backendConfig }}
- --backend-config={{ . }}
{{- end }}
{{- range $s.extraArgs }}
{{- $flag := regexReplaceAll "=.*" . "" }}
{{- if has $flag (list "--model-repository" "--model-store" "--http-port" "--grpc-port" "--metrics-port" "--allow-metrics" "--allow-grpc") }}
{{- fail (printf "server.extraArgs: %s is set by the chart (modelRepository.mountPath, ports.*, metrics.enabled, server.allowGrpc)" $flag) }}
{{- end }}
- {{ . | quote }}
{{- end }}
{{- end }}
