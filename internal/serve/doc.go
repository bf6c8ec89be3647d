// Package serve is the `dualstack-webhook serve` command: flags and
// environment → Config → Run, the one function that wires certificates,
// cluster caches, the policy engine and the webhook server together.
package serve
