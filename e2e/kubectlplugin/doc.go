// Package kubectlplugin installs the binary as the kubectl plugin
// kubectl-dualstack from the krew manifest and archive that
// plugins/krew/release.sh builds (the way krew installs it), then drives it
// through the real kubectl against a real kube-apiserver (+ etcd and
// kube-controller-manager): kubectl finds the plugin on $PATH and hands it
// its arguments, and the plugin must honour kubectl's --kubeconfig,
// --context, -n and -o for status, plan, apply and convert.
package kubectlplugin
