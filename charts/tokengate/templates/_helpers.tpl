{{/* Names, labels and values shared by the templates. */}}

{{- define "tokengate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tokengate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tokengate.refresher" -}}{{ include "tokengate.fullname" . }}-refresher{{- end -}}
{{- define "tokengate.extauthz" -}}{{ include "tokengate.fullname" . }}-extauthz{{- end -}}

{{- define "tokengate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "tokengate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* selectorLabels takes (dict "ctx" $ "component" "refresher"). */}}
{{- define "tokengate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tokengate.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "tokengate.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}
{{- end -}}

{{- define "tokengate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{ default (include "tokengate.fullname" .) .Values.serviceAccount.name }}
{{- else -}}
{{ default "default" .Values.serviceAccount.name }}
{{- end -}}
{{- end -}}

{{- define "tokengate.refresherURL" -}}
{{ ternary "https" "http" .Values.tls.enabled }}://{{ include "tokengate.refresher" . }}.{{ .Release.Namespace }}.svc.cluster.local:{{ .Values.refresher.port }}
{{- end -}}

{{- define "tokengate.issuer" -}}
{{- default (include "tokengate.refresherURL" .) .Values.issuer -}}
{{- end -}}

{{- define "tokengate.adminTokenSecret" -}}
{{- default (printf "%s-admin-token" (include "tokengate.fullname" .)) .Values.adminToken.existingSecret -}}
{{- end -}}

{{- define "tokengate.signingKeySecret" -}}
{{- default (printf "%s-signing-key" (include "tokengate.fullname" .)) .Values.signingKey.existingSecret -}}
{{- end -}}

{{- define "tokengate.dpopNonceSecret" -}}
{{- default (printf "%s-dpop-nonce" (include "tokengate.fullname" .)) .Values.refresher.dpop.nonce.existingSecret -}}
{{- end -}}

{{- define "tokengate.redisSecret" -}}
{{- default (printf "%s-redis" (include "tokengate.fullname" .)) .Values.refresher.redis.existingSecret -}}
{{- end -}}

{{/* The extauthz config: the user's, plus a provider for this release's
refresher when the user gave none. */}}
{{- define "tokengate.extauthzConfig" -}}
{{- $cfg := deepCopy (.Values.extauthz.config | default dict) -}}
{{- if not $cfg.providers -}}
{{- $provider := dict "name" "tokengate" "issuer" (include "tokengate.issuer" .) "audiences" .Values.audience "jwks_url" (printf "%s/.well-known/jwks.json" (include "tokengate.refresherURL" .)) -}}
{{- $_ := set $cfg "providers" (list $provider) -}}
{{- end -}}
{{- if .Values.extauthz.dpopNonceSecret -}}
{{- $dpop := $cfg.dpop | default dict -}}
{{- $nonce := $dpop.nonce | default dict -}}
{{- $_ := set $nonce "enabled" true -}}
{{- $_ := set $nonce "secret_file" "/etc/tokengate/dpop-nonce/secret" -}}
{{- $_ := set $dpop "nonce" $nonce -}}
{{- $_ := set $cfg "dpop" $dpop -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* Volumes and mounts every tokengate container has: a writable /tmp and the admin token. */}}
{{- define "tokengate.commonVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 16Mi
- name: admin-token
  secret:
    secretName: {{ include "tokengate.adminTokenSecret" . }}
    defaultMode: 0440
    items:
      - key: {{ .Values.adminToken.existingSecretKey }}
        path: admin-token
{{- end -}}

{{- define "tokengate.commonMounts" -}}
- name: tmp
  mountPath: /tmp
- name: admin-token
  mountPath: /etc/tokengate/admin-token
  readOnly: true
{{- end -}}

{{/*
Shutdown and listener-limit flags of one service (docs/operations.md):
--drain-period, --shutdown-grace, and one --flag per key of .limits
(camelCase key → kebab-case flag; numbers printed as integers).
*/}}
{{- define "tokengate.listenerArgs" -}}
- --drain-period={{ .drainPeriod }}
- --shutdown-grace={{ .shutdownGrace }}
{{- range $k, $v := .limits }}
- --{{ kebabcase $k }}={{ if kindIs "float64" $v }}{{ int64 $v }}{{ else }}{{ $v }}{{ end }}
{{- end }}
{{- end }}

{{/* TLS (values tls.*): the Secret, the flags, and the probes. */}}
{{- define "tokengate.tlsSecret" -}}
{{- default (printf "%s-tls" (include "tokengate.fullname" .)) .Values.tls.secretName -}}
{{- end -}}

{{/* --tls-* flags of one service; .clientAuth adds mutual TLS. */}}
{{- define "tokengate.tlsArgs" -}}
{{- if .ctx.Values.tls.enabled }}
- --tls-cert-file=/etc/tokengate/tls/tls.crt
- --tls-key-file=/etc/tokengate/tls/tls.key
{{- if .clientAuth }}
- --tls-client-ca-file=/etc/tokengate/tls/ca.crt
{{- end }}
{{- end }}
{{- end -}}

{{/* The TLS Secret as a directory (no subPath, so a rotation reaches the
running pod and the services re-read it). */}}
{{- define "tokengate.tlsVolume" -}}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "tokengate.tlsSecret" . }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{- define "tokengate.tlsMount" -}}
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /etc/tokengate/tls
  readOnly: true
{{- end }}
{{- end -}}

{{/*
An exec probe running `tokengate healthcheck` inside the container, for a
TLS listener the kubelet cannot probe itself (gRPC probes speak no TLS;
HTTP probes present no client certificate). It verifies the service with
ca.crt under the Service's name and, with mutual TLS, presents the pod's
own certificate. dict: url, serverName, clientAuth.
*/}}
{{- define "tokengate.execProbe" -}}
exec:
  command:
    - /tokengate
    - healthcheck
    - --timeout=2s
    - --tls-ca-file=/etc/tokengate/tls/ca.crt
    - --tls-server-name={{ .serverName }}
    {{- if .clientAuth }}
    - --tls-cert-file=/etc/tokengate/tls/tls.crt
    - --tls-key-file=/etc/tokengate/tls/tls.key
    {{- end }}
    - {{ .url }}
timeoutSeconds: 3
{{- end -}}
