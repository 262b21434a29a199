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
The gateways' bootstrap: `switchyard bootstrap` output whose xDS cluster (a
static 127.0.0.1:18000) becomes the control plane's Service, with mTLS when on.
`switchyard bootstrap --xds` takes an IP only and has no TLS flags yet; each
replaced string must be found (a changed bootstrap fails the render).
*/}}
{{- define "switchyard.bootstrap" -}}
{{- $b := .Values.gateway.bootstrap | default (.Files.Get "files/envoy-bootstrap.yaml") -}}
{{- $static := "    type: STATIC\n" -}}
{{- $addr := "socket_address: { address: \"127.0.0.1\", port_value: 18000 }" -}}
{{- $timeout := "    connect_timeout: 1s\n" -}}
{{- range (list $static $addr $timeout) -}}
{{- if ne (len (splitList . $b)) 2 -}}
{{- fail (printf "gateway bootstrap: expected `switchyard bootstrap --xds 127.0.0.1:18000` output with %q once" .) -}}
{{- end -}}
{{- end -}}
{{- $b = replace $static "    type: LOGICAL_DNS\n" $b -}}
{{- $b = replace $addr (printf "socket_address: { address: %q, port_value: %d }" (include "switchyard.cp.host" .) (int .Values.controlPlane.ports.xds)) $b -}}
{{- if .Values.tls.enabled -}}
{{- $tls := printf `    connect_timeout: 1s
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: %s
        common_tls_context:
          alpn_protocols: [h2]
          tls_certificates:
          - certificate_chain: { filename: /etc/switchyard/tls/tls.crt }
            private_key: { filename: /etc/switchyard/tls/tls.key }
          validation_context:
            trusted_ca: { filename: /etc/switchyard/tls/ca.crt }
            match_typed_subject_alt_names:
            - san_type: DNS
              matcher: { exact: %s }
` (include "switchyard.cp.host" .) (include "switchyard.cp.host" .) -}}
{{- $b = replace $timeout $tls $b -}}
{{- end -}}
{{- $b -}}
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
