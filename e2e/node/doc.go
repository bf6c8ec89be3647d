// Package node runs the product the way users run it: the project's image
// (make image), the chart's Pods, on a real single-node cluster built from
// parts by node.sh (containerd + runc + CNI, kubelet, kube-proxy, the control
// plane). The tests carry the e2enode build tag and run only under
// `make e2e-node`, which brings the node up, imports the image and passes the
// kubeconfig in E2E_NODE_KUBECONFIG.
package node
