// Package convert is the offline side of the legacy-field rewrite:
// `dualstack-webhook convert` reads Kubernetes manifests (multi-document
// YAML, JSON, v1 Lists, or a kustomize KRM ResourceList) and rewrites the
// alpha dual-stack field spec.ipFamily (Kubernetes 1.16-1.19) of v1
// Services into ipFamilyPolicy/ipFamilies, with the webhook's own policy
// engine (package policy).
//
// Why offline: a 1.20+ kube-apiserver decodes the request into the typed
// v1.Service before any admission webhook runs, so spec.ipFamily is either
// rejected (strict field validation, kubectl's default: HTTP 400) or
// silently dropped (warn/ignore) before the webhook could translate it
// (docs/dualstack-rules.md §3.4). The only place the translation
// can still act is on the manifest itself: by hand, in CI, as a kustomize
// exec function or as a Helm post-renderer.
//
// Everything that is not a legacy Service is passed through byte for byte
// (YAML) and rewritten Services are edited line-wise where the YAML shape
// allows it, so comments, key order and quoting survive. See docs/convert.md
// for the user-facing contract.
package convert
