{{/*
Names. Resource names are DNS labels: at most 63 characters.
*/}}

{{- define "sidelb.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* `<release>-<chart>`, or the release name alone when it already contains the chart's. */}}
{{- define "sidelb.fullname" -}}
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

{{/* The injector's Deployment, Service, ServiceAccount and PodDisruptionBudget. */}}
{{- define "sidelb.injector.name" -}}
{{- printf "%s-injector" (include "sidelb.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{/* The Secret holding the webhook's serving certificate (tls.crt, tls.key, ca.crt). */}}
{{- define "sidelb.tls.secretName" -}}
{{- printf "%s-tls" (include "sidelb.injector.name" .) }}
{{- end }}

{{/* The names the API server may use for the injector's Service; it dials `<svc>.<ns>.svc`. */}}
{{- define "sidelb.injector.dnsNames" -}}
{{- $svc := include "sidelb.injector.name" . }}
{{- $ns := .Release.Namespace }}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toJson }}
{{- end }}

{{- define "sidelb.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels, as Kubernetes recommends (app.kubernetes.io/*).
*/}}
{{- define "sidelb.labels" -}}
helm.sh/chart: {{ include "sidelb.chart" . }}
app.kubernetes.io/name: {{ include "sidelb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sidelb
{{- end }}

{{/* Labels of one component (`injector`, `webhook`, `proxy`, `tls`). */}}
{{- define "sidelb.componentLabels" -}}
{{ include "sidelb.labels" .context }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* What the injector's Deployment, Service and PodDisruptionBudget select on; never changes. */}}
{{- define "sidelb.injector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sidelb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: injector
{{- end }}

{{/*
Images: `repository:tag`, the tag defaulting to the chart's appVersion.
*/}}
{{- define "sidelb.image" -}}
{{- printf "%s:%s" .image.repository (default .context.Chart.AppVersion .image.tag | toString) }}
{{- end }}

{{/*
The proxy's resources as the injector's four variables; an absent or null
entry becomes "" (no such request or limit).
*/}}
{{- define "sidelb.proxy.resourceEnv" -}}
{{- $r := .Values.proxy.resources | default dict }}
{{- $requests := $r.requests | default dict }}
{{- $limits := $r.limits | default dict -}}
- name: SIDELB_PROXY_CPU_REQUEST
  value: {{ $requests.cpu | default "" | toString | quote }}
- name: SIDELB_PROXY_MEMORY_REQUEST
  value: {{ $requests.memory | default "" | toString | quote }}
- name: SIDELB_PROXY_CPU_LIMIT
  value: {{ $limits.cpu | default "" | toString | quote }}
- name: SIDELB_PROXY_MEMORY_LIMIT
  value: {{ $limits.memory | default "" | toString | quote }}
{{- end }}

{{/*
The injector's `SIDELB_DEFAULT_*` variables from `proxy.settings`, keyed by
annotation name. files/proxy-settings.json maps each annotation to its
variable; it is generated from the proxy's settings table (sidelb-config's
SETTINGS) and checked against it by a test, so the names cannot drift.
*/}}
{{- define "sidelb.proxy.settingsEnv" -}}
{{- $known := dict }}
{{- range (.Files.Get "files/proxy-settings.json" | fromJson).settings }}
{{- $_ := set $known (trimPrefix "sidelb.io/" .annotation) .injectorEnv }}
{{- end }}
{{- $env := list }}
{{- range $key, $value := .Values.proxy.settings }}
{{- $name := get $known $key }}
{{- if not $name }}
{{- fail (printf "proxy.settings.%s: no such proxy setting; see the annotation table in the chart's README" $key) }}
{{- end }}
{{- $env = append $env (dict "name" $name "value" (toString $value)) }}
{{- end }}
{{- with $env }}{{ toYaml . }}{{ end }}
{{- end }}

{{/*
The webhook's serving certificate as a dict of base64 PEM strings: `ca.crt`,
`tls.crt`, `tls.key`. Taken from the Secret already in the cluster when there
is one, so `helm upgrade` keeps the certificate and the caBundle the API
server trusts; generated otherwise (first install, `helm template`).
*/}}
{{- define "sidelb.tls.generated" -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "sidelb.tls.secretName" .) }}
{{- $data := dict }}
{{- if and $existing $existing.data }}
{{- $data = $existing.data }}
{{- end }}
{{- if and (get $data "ca.crt") (get $data "tls.crt") (get $data "tls.key") }}
{{- dict "ca.crt" (get $data "ca.crt") "tls.crt" (get $data "tls.crt") "tls.key" (get $data "tls.key") | toJson }}
{{- else }}
{{- $days := int .Values.tls.validityDays }}
{{- $dnsNames := include "sidelb.injector.dnsNames" . | fromJsonArray }}
{{- $ca := genCA (printf "%s-ca" (include "sidelb.injector.name" .)) $days }}
{{- $cert := genSignedCert (index $dnsNames 2) nil $dnsNames $days $ca }}
{{- dict "ca.crt" ($ca.Cert | b64enc) "tls.crt" ($cert.Cert | b64enc) "tls.key" ($cert.Key | b64enc) | toJson }}
{{- end }}
{{- end }}

{{/* The proxies' ClusterRole, and the ClusterRoleBinding of it the injector keeps. */}}
{{- define "sidelb.proxy.rbacName" -}}
{{- printf "%s-proxy" (include "sidelb.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}

{{/* "true" when the injector grants each injected namespace the proxies' access (the default). */}}
{{- define "sidelb.rbac.perNamespace" -}}
{{- if and .Values.rbac.create (not .Values.rbac.clusterWide) }}true{{ end }}
{{- end }}
