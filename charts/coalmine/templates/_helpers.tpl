{{/* The name of every object: the release's, so one release per shard can live beside another. */}}
{{- define "coalmine.fullname" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* What selects the operator's pods: the labels of deploy/, and the release. */}}
{{- define "coalmine.selectorLabels" -}}
app.kubernetes.io/name: coalmine
app.kubernetes.io/component: operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Every object's labels: deploy/'s, and Helm's own. */}}
{{- define "coalmine.labels" -}}
{{ include "coalmine.selectorLabels" . }}
app.kubernetes.io/part-of: coalmine
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/*
The RBAC rules of deploy/ (files/ links to them: one list for both installs), with the peering
object's name (resourceNames) set to this release's.
*/}}
{{- define "coalmine.rules" -}}
{{- $rules := (fromYaml (.context.Files.Get .file)).rules -}}
{{- range $rules }}
{{- if .resourceNames }}
{{- $_ := set . "resourceNames" (list (include "coalmine.fullname" $.context)) }}
{{- end }}
{{- end }}
{{- toYaml $rules }}
{{- end -}}
