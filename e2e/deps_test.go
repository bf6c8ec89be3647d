package e2e

import (
	_ "github.com/dualstack-webhook/dualstack-webhook/policy"
	_ "k8s.io/client-go/kubernetes"
	_ "sigs.k8s.io/controller-runtime/pkg/envtest"
)
