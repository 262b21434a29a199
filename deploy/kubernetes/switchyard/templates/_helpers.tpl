{{- define "switchyard.name" -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "switchyard.labels" -}}
app.kubernetes.io/name: switchyard
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "switchyard.cp.selector" -}}
app.kubernetes.io/name: switchyard
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: control-plane
{{- end -}}

{{- define "switchyard.gw.selector" -}}
app.kubernetes.io/name: switchyard
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "switchyard.cp.name" -}}{{ include "switchyard.name" . }}-control-plane{{- end -}}
{{- define "switchyard.gw.name" -}}{{ include "switchyard.name" . }}-gateway{{- end -}}

{{/* The control plane's Service name as the gateways and certificates know it. */}}
{{- define "switchyard.cp.host" -}}
{{ include "switchyard.cp.name" . }}.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}
{{- end -}}

{{/* image reference: repository@digest when a digest is set, else repository:tag */}}
{{- define "switchyard.image" -}}
{{- if .digest -}}{{ .repository }}@{{ .digest }}{{- else -}}{{ .repository }}:{{ .tag }}{{- end -}}
{{- end -}}

{{- define "switchyard.config" -}}
{{- .Values.config | default (.Files.Get "files/switchyard.yaml") -}}
{{- end -}}

{{- define "switchyard.issuerName" -}}
{{- .Values.tls.certManager.issuerRef.name | default (printf "%s-ca" (include "switchyard.name" .)) -}}
{{- end -}}

{{/*
The gateways' bootstrap: `switchyard bootstrap` output (deploy/kubernetes/
update-bootstrap.sh). Plain: its xDS cluster (a static 127.0.0.1:18000) becomes
the control plane's Service. TLS (files/envoy-bootstrap-tls.yaml): dialled as
switchyard-control-plane.placeholder, replaced by the Service name, which the
control plane's certificate carries; the client certificate and CA come from
the file-based SDS files next to it in /etc/envoy. Each replaced string must be
found (a changed bootstrap fails the render).
*/}}
{{- define "switchyard.bootstrap" -}}
{{- $host := include "switchyard.cp.host" . -}}
{{- $port := int .Values.controlPlane.ports.xds -}}
{{- if .Values.tls.enabled -}}
{{- $b := .Values.gateway.bootstrap | default (.Files.Get "files/envoy-bootstrap-tls.yaml") -}}
{{- $placeholder := "switchyard-control-plane.placeholder" -}}
{{- $addr := printf "socket_address: { address: %q, port_value: 18000 }" $placeholder -}}
{{- range (list $addr "switchyard_sds_dir: \"/etc/envoy\"" "tls_certificate_sds_secret_configs") -}}
{{- if ne (len (splitList . $b)) 2 -}}
{{- fail (printf "gateway bootstrap: expected `switchyard bootstrap --xds %s:18000 --tls-... --sds-dir /etc/envoy` output with %q once" $placeholder .) -}}
{{- end -}}
{{- end -}}
{{- $b = replace $addr (printf "socket_address: { address: %q, port_value: %d }" $placeholder $port) $b -}}
{{- replace $placeholder $host $b -}}
{{- else -}}
{{- $b := .Values.gateway.bootstrap | default (.Files.Get "files/envoy-bootstrap.yaml") -}}
{{- $static := "    type: STATIC\n" -}}
{{- $addr := "socket_address: { address: \"127.0.0.1\", port_value: 18000 }" -}}
{{- range (list $static $addr) -}}
{{- if ne (len (splitList . $b)) 2 -}}
{{- fail (printf "gateway bootstrap: expected `switchyard bootstrap --xds 127.0.0.1:18000` output with %q once" .) -}}
{{- end -}}
{{- end -}}
{{- $b = replace $static "    type: LOGICAL_DNS\n    dns_lookup_family: V4_PREFERRED\n" $b -}}
{{- replace $addr (printf "socket_address: { address: %q, port_value: %d }" $host $port) $b -}}
{{- end -}}
{{- end -}}

{{- define "switchyard.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "switchyard.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}
