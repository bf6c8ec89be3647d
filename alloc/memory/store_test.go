package memory_test

import (
	"testing"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/dualstack-webhook/dualstack-webhook/alloc/memory"
	"github.com/dualstack-webhook/dualstack-webhook/alloc/storetest"
)

func TestContract(t *testing.T) {
	storetest.Run(t, func(*testing.T) alloc.Store { return memory.New() })
}
