{{/* Chart name, possibly overridden. */}}
{{- define "dualstack-webhook.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name prefix of every object. Truncated to 50 so that suffixes such as
"-selfsigned" and "-pools" keep names within 63 characters.
*/}}
{{- define "dualstack-webhook.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "dualstack-webhook.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dualstack-webhook.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dualstack-webhook.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "dualstack-webhook.labels" -}}
helm.sh/chart: {{ include "dualstack-webhook.chart" . }}
{{ include "dualstack-webhook.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dualstack-webhook
{{- end }}

{{- define "dualstack-webhook.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dualstack-webhook.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "dualstack-webhook.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Names of derived objects, in one place so that templates agree. */}}
{{- define "dualstack-webhook.webhookConfigName" -}}{{ include "dualstack-webhook.fullname" . }}{{- end }}
{{- define "dualstack-webhook.servingCertificate" -}}{{ include "dualstack-webhook.fullname" . }}-serving{{- end }}
{{- define "dualstack-webhook.caSecretName" -}}{{ include "dualstack-webhook.fullname" . }}-ca{{- end }}
{{- define "dualstack-webhook.poolsConfigMap" -}}{{ include "dualstack-webhook.fullname" . }}-pools{{- end }}

{{/* Secret mounted at /certs (certManager and secret modes). */}}
{{- define "dualstack-webhook.tlsSecretName" -}}
{{- if eq .Values.certs.mode "secret" }}
{{- required "certs.secret.name is required when certs.mode=secret" .Values.certs.secret.name }}
{{- else }}
{{- include "dualstack-webhook.fullname" . }}-tls
{{- end }}
{{- end }}

{{/* DNS names the serving certificate must carry: the apiserver dials <svc>.<ns>.svc. */}}
{{- define "dualstack-webhook.dnsNames" -}}
{{- $svc := include "dualstack-webhook.fullname" . -}}
- {{ $svc }}
- {{ $svc }}.{{ .Release.Namespace }}
- {{ $svc }}.{{ .Release.Namespace }}.svc
- {{ $svc }}.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}
{{- end }}

{{/* Validate combinations the schema cannot express. */}}
{{- define "dualstack-webhook.validate" -}}
{{- if and (eq .Values.defaulting.mode "policy") (semverCompare "<1.36.0-0" .Capabilities.KubeVersion.Version) }}
{{- fail (printf "defaulting.mode=policy needs Kubernetes >= 1.36 (MutatingAdmissionPolicy admissionregistration.k8s.io/v1); this cluster is %s: use defaulting.mode=webhook" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- if and (eq .Values.certs.mode "secret") (not .Values.certs.secret.caBundle) }}
{{- fail "certs.secret.caBundle is required when certs.mode=secret: the apiserver must trust the Secret's certificate" }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) }}
{{- fail "set only one of podDisruptionBudget.minAvailable and podDisruptionBudget.maxUnavailable" }}
{{- end }}
{{- end }}

{{/*
Annotations of the webhook configurations: cert-manager's cainjector copies
the CA of the serving Certificate's Secret into every caBundle.
*/}}
{{- define "dualstack-webhook.webhookAnnotations" -}}
{{- if eq .Values.certs.mode "certManager" }}
annotations:
  cert-manager.io/inject-ca-from: {{ .Release.Namespace }}/{{ include "dualstack-webhook.servingCertificate" . }}
{{- end }}
{{- end }}

{{/* clientConfig of one webhook; $path is the URL path. */}}
{{- define "dualstack-webhook.clientConfig" -}}
{{- $root := index . 0 -}}
{{- $path := index . 1 -}}
clientConfig:
  service:
    name: {{ include "dualstack-webhook.fullname" $root }}
    namespace: {{ $root.Release.Namespace }}
    path: {{ $path }}
    port: {{ $root.Values.service.port }}
  {{- if eq $root.Values.certs.mode "secret" }}
  caBundle: {{ $root.Values.certs.secret.caBundle }}
  {{- end }}
{{- end }}

{{/*
Selectors shared by the Service webhooks: never kube-system nor our own
namespace (a webhook that gates its own pods' Services, or the cluster's
DNS, can lock the cluster), and honour dualstack-webhook.io/skip=true on the
Namespace and on the Service. NotIn also matches objects without the label.
*/}}
{{- /*
Selectors, rules and match conditions of the Service webhooks. Called with
(list $ <skipLabelledObjects>): when true, Services labelled
dualstack-webhook.io/skip=true are not sent (objectSelector); the validating
webhook passes false unless webhook.validating.checkSkipLabelled is off, so
that it still checks the addresses such a Service asks for.
*/ -}}
{{- define "dualstack-webhook.serviceSelectors" -}}
{{- $ := index . 0 }}
{{- $skipObjects := index . 1 -}}
namespaceSelector:
  matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values:
        {{- toYaml (uniq (concat (list "kube-system" $.Release.Namespace) $.Values.webhook.excludeNamespaces)) | nindent 8 }}
    - key: dualstack-webhook.io/skip
      operator: NotIn
      values: ["true"]
    {{- with $.Values.webhook.namespaceSelectorExpressions }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- if $skipObjects }}
objectSelector:
  matchExpressions:
    - key: dualstack-webhook.io/skip
      operator: NotIn
      values: ["true"]
{{- end }}
rules:
  - apiGroups: [""]
    apiVersions: ["v1"]
    operations: ["CREATE", "UPDATE"]
    resources: ["services"]
    scope: Namespaced
# ExternalName Services have no cluster IPs: skip them before the call. The
# DELETE and has() guards keep the expression from erroring (an error counts
# as a webhook failure) should DELETE ever be added or a field be absent.
matchConditions:
  - name: not-externalname
    expression: "request.operation == 'DELETE' || !has(object.spec) || !has(object.spec.type) || object.spec.type != 'ExternalName'"
admissionReviewVersions: ["v1", "v1beta1"]
{{- end }}
