// Package storetest is the executable contract of alloc.Store. Every backend
// runs the same suite from its own tests:
//
//	func TestContract(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) alloc.Store { return memory.New() })
//	}
//
// newStore must return an empty store, isolated from the stores of other
// subtests (the configmap backend uses a fresh namespace per call).
package storetest
