// Package memory is the in-process alloc.Store: for `serve --dev`, unit
// tests and benchmarks. It is what the configmap store would be if the
// apiserver lived in the same process: the same contract (alloc/storetest),
// versions that change on every write, and no persistence.
package memory
