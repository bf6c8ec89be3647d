package allocstore

import (
	"testing"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/dualstack-webhook/dualstack-webhook/alloc/storetest"
)

// TestContract runs the same contract as the memory store, against the
// ConfigMap store on a real kube-apiserver.
func TestContract(t *testing.T) {
	suite.Need(t)
	storetest.Run(t, func(t *testing.T) alloc.Store { return newStore(t, namespace(t, "contract")) })
}
