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

{{/* The Wasm build's path in the pod that holds it (the filter image's file name). */}}
{{- define "switchyard.filterWasm" -}}
{{ trimSuffix "/" .Values.filter.mountPath }}/switchyard_filter.wasm
{{- end -}}

{{/*
The control plane's config. The chart's (files/switchyard.yaml): its `filter:`
line written for filter.delivery (image: the file the gateway pods' init
container copies to filter.mountPath; remote: the control plane pod's copy,
`serve: true`, which it serves to the gateways). Yours (.Values.config): used as
it is, but the render fails unless its `filter:` fits the delivery: remote needs
`filter: { wasm: <mountPath>/switchyard_filter.wasm, serve: true }` (the Wasm
build only: Envoy 1.40 passes requests unfiltered when it cannot fetch a dynamic
module, so the control plane refuses to serve the native one), and image refuses
`serve: true` (the control plane pod has no filter file then).
*/}}
{{- define "switchyard.config" -}}
{{- $remote := eq .Values.filter.delivery "remote" -}}
{{- $wasm := include "switchyard.filterWasm" . -}}
{{- $want := printf "filter: { wasm: %s%s }" $wasm (ternary ", serve: true" "" $remote) -}}
{{- if .Values.config -}}
{{- $c := fromYaml .Values.config -}}
{{- if hasKey $c "Error" -}}
{{- fail (printf "config: not YAML: %v" (get $c "Error")) -}}
{{- end -}}
{{- $f := get $c "filter" | default dict -}}
{{- if not (kindIs "map" $f) -}}
{{- fail "config: `filter:` is not a map" -}}
{{- end -}}
{{- $serve := eq (toString (get $f "serve")) "true" -}}
{{- if $remote -}}
{{- if hasKey $f "module" -}}
{{- fail (printf "config: filter.delivery remote delivers the Wasm build only, not the native module (filter.module): Envoy 1.40 passes requests unfiltered when it cannot fetch a dynamic module. Use filter.delivery image for the native module, or `%s`" $want) -}}
{{- end -}}
{{- if not (and $serve (eq (toString (get $f "wasm")) $wasm)) -}}
{{- fail (printf "config: filter.delivery remote needs `%s` in the config (the control plane pod's copy of the build, which it serves to the gateways)" $want) -}}
{{- end -}}
{{- else if $serve -}}
{{- fail "config: filter.serve: true needs filter.delivery remote (only then does the control plane pod hold the filter file)" -}}
{{- end -}}
{{- .Values.config -}}
{{- else -}}
{{- $text := .Files.Get "files/switchyard.yaml" -}}
{{- $line := "filter: { wasm: /opt/switchyard/filter/switchyard_filter.wasm }" -}}
{{- if ne (len (splitList $line $text)) 2 -}}
{{- fail (printf "files/switchyard.yaml: expected the line %q once (the chart writes it for filter.delivery)" $line) -}}
{{- end -}}
{{- replace $line $want $text -}}
{{- end -}}
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
the file-based SDS files next to it in /etc/envoy. Both: the stats listener
(`--stats-addr`) gets gateway.metrics.port. Each replaced string must be found
(a changed bootstrap fails the render).
*/}}
{{- define "switchyard.bootstrap" -}}
{{- $host := include "switchyard.cp.host" . -}}
{{- $port := int .Values.controlPlane.ports.xds -}}
{{- $b := "" -}}
{{- if .Values.tls.enabled -}}
{{- $b = .Values.gateway.bootstrap | default (.Files.Get "files/envoy-bootstrap-tls.yaml") -}}
{{- $placeholder := "switchyard-control-plane.placeholder" -}}
{{- $addr := printf "socket_address: { address: %q, port_value: 18000 }" $placeholder -}}
{{- range (list $addr "switchyard_sds_dir: \"/etc/envoy\"" "tls_certificate_sds_secret_configs") -}}
{{- if ne (len (splitList . $b)) 2 -}}
{{- fail (printf "gateway bootstrap: expected `switchyard bootstrap --xds %s:18000 --tls-... --sds-dir /etc/envoy` output with %q once" $placeholder .) -}}
{{- end -}}
{{- end -}}
{{- $b = replace $addr (printf "socket_address: { address: %q, port_value: %d }" $placeholder $port) $b -}}
{{- $b = replace $placeholder $host $b -}}
{{- else -}}
{{- $b = .Values.gateway.bootstrap | default (.Files.Get "files/envoy-bootstrap.yaml") -}}
{{- $static := "  - name: switchyard_xds\n    type: STATIC\n" -}}
{{- $addr := "socket_address: { address: \"127.0.0.1\", port_value: 18000 }" -}}
{{- range (list $static $addr) -}}
{{- if ne (len (splitList . $b)) 2 -}}
{{- fail (printf "gateway bootstrap: expected `switchyard bootstrap --xds 127.0.0.1:18000` output with %q once" .) -}}
{{- end -}}
{{- end -}}
{{- $b = replace $static "  - name: switchyard_xds\n    type: LOGICAL_DNS\n    dns_lookup_family: V4_PREFERRED\n" $b -}}
{{- $b = replace $addr (printf "socket_address: { address: %q, port_value: %d }" $host $port) $b -}}
{{- end -}}
{{- /* The stats listener's address line, its port replaced. */ -}}
{{- $stats := `(- name: switchyard_prometheus\n(?:    .*\n)*?      socket_address: \{ address: "[^"]+", port_value: )[0-9]+( \})` -}}
{{- if ne (len (regexFindAll $stats $b -1)) 1 -}}
{{- fail "gateway bootstrap: expected `switchyard bootstrap --stats-addr 0.0.0.0:9902` output (the stats listener Prometheus scrapes, on gateway.metrics.port)" -}}
{{- end -}}
{{- regexReplaceAll $stats $b (printf "${1}%d${2}" (int .Values.gateway.metrics.port)) -}}
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
