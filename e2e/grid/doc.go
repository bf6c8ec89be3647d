// Package grid records the apiserver's own answers to every combination of
// the dual-stack Service fields, as JSON truth files for the policy package's
// unit tests (policy/testdata/create_grid.json, update_grid.json).
//
// The files are produced by real kube-apiservers with no webhook, one per
// cluster shape of upstream TestCreateInitIPFields (v4 10.0.0.0/16, v6
// 2000::/108, v4v6 and v6v4). Regenerate with
//
//	make grid   # = go test ./grid -run 'Grid' -update (in e2e/)
//
// Without -update the tests regenerate the answers and compare them with the
// committed files, so CI notices when the files and the apiserver disagree.
package grid
