// Command image builds an OCI image layout archive (an index.json, the
// oci-layout marker and content-addressed blobs, in one tar) from static
// binaries — one image per platform under one image index — with no container
// engine and no base image: the only layer holds the binary, a minimal
// /etc/passwd and /etc/group naming the non-root user, and /tmp.
//
// The output is reproducible: every timestamp is the given epoch (the commit
// time in `make image`), tar entries are sorted, owners are fixed, so the
// same inputs give the same digests.
//
// `make image` runs it for bin/dualstack-webhook.oci.tar; the end-to-end node
// tier runs it for its pause image as well.
package main
