// Package certse2e tests the certs package against a real kube-apiserver +
// etcd (envtest, binaries from e2e/bin/install.sh): the self-bootstrap source
// writes caBundle into real webhook configurations, the apiserver keeps
// trusting the webhook through CA rotations, and replicas racing on an empty
// namespace converge on one CA.
package certse2e
