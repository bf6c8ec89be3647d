package framework

import (
	"net/netip"
	"testing"
)

func TestIPAt(t *testing.T) {
	tests := []struct {
		prefix string
		offset uint64
		want   string
		err    bool
	}{
		{"10.96.0.0/16", 0, "10.96.0.0", false},
		{"10.96.0.0/16", 1, "10.96.0.1", false},
		{"10.96.0.0/16", 256 + 5, "10.96.1.5", false},
		{"10.96.0.0/16", 65535, "10.96.255.255", false},
		{"10.96.0.0/16", 65536, "", true},
		{"fd00:10:96::/108", 0xfffff, "fd00:10:96::f:ffff", false},
		{"fd00:10:96::/108", 0x100000, "", true},
		{"2000::/108", 0x1ff, "2000::1ff", false},
		{"255.255.255.0/24", 300, "", true}, // carry out of the address
	}
	for _, tt := range tests {
		got, err := IPAt(netip.MustParsePrefix(tt.prefix), tt.offset)
		if (err != nil) != tt.err {
			t.Errorf("IPAt(%s, %d) error = %v, want error %v", tt.prefix, tt.offset, err, tt.err)
			continue
		}
		if !tt.err && got.String() != tt.want {
			t.Errorf("IPAt(%s, %d) = %s, want %s", tt.prefix, tt.offset, got, tt.want)
		}
	}
}

func TestDiff(t *testing.T) {
	inv := func(code int32, msg string, causes ...Cause) Outcome {
		return Outcome{Error: &APIError{Code: code, Message: msg, Causes: causes}}
	}
	cause := Cause{Field: "spec.ipFamilies[0]", Type: "FieldValueInvalid", Message: `Invalid value: "IPv6": not configured on this cluster`}
	ok := Outcome{IPFamilyPolicy: "SingleStack", IPFamilies: []string{"IPv4"}, ClusterIPFamilies: []string{"IPv4"}, ClusterIPCount: 1}
	dual := Outcome{IPFamilyPolicy: "PreferDualStack", IPFamilies: []string{"IPv4", "IPv6"}, ClusterIPFamilies: []string{"IPv4", "IPv6"}, ClusterIPCount: 2}
	tests := []struct {
		name         string
		plain, hook  Outcome
		wantNumDiffs int
	}{
		{"same success", ok, ok, 0},
		{"different policy and families", ok, dual, 3},
		{"same error relayed by webhook", inv(422, `Service "s" is invalid: `+cause.Text(), cause),
			inv(422, `admission webhook "m.x" denied the request: Service "s" is invalid: `+cause.Text()), 0},
		{"webhook error lacks the field text", inv(422, "x", cause), inv(422, `admission webhook "m" denied the request: nope`), 1},
		{"codes differ", inv(422, "x", cause), inv(400, cause.Text()), 1},
		{"apiserver rejects, webhook admits", inv(422, "x", cause), ok, 1},
		{"apiserver admits, webhook rejects", ok, inv(422, "x"), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if d := Diff(tt.plain, tt.hook); len(d) != tt.wantNumDiffs {
				t.Errorf("Diff = %q, want %d differences", d, tt.wantNumDiffs)
			}
		})
	}
}

func TestStripWebhookPrefix(t *testing.T) {
	got, ok := StripWebhookPrefix(`admission webhook "mutate.a.b" denied the request: Service "x" is invalid: y`)
	if !ok || got != `Service "x" is invalid: y` {
		t.Errorf("got %q, %v", got, ok)
	}
	if _, ok := StripWebhookPrefix(`Service "x" is invalid`); ok {
		t.Error("stripped a message without the prefix")
	}
}

func TestMaskIPs(t *testing.T) {
	o := Outcome{Error: &APIError{Code: 422,
		Message: `Service "s" is invalid: spec.clusterIPs[0]: Invalid value: "10.96.9.161": expected an IPv6 value; "fd00::1"; "IPv4"`,
		Causes:  []Cause{{Field: "spec.clusterIPs[0]", Message: `Invalid value: "10.96.9.161": x`}}}}
	got := MaskIPs(o)
	want := `Service "s" is invalid: spec.clusterIPs[0]: Invalid value: "<IPv4>": expected an IPv6 value; "<IPv6>"; "IPv4"`
	if got.Error.Message != want || got.Error.Causes[0].Message != `Invalid value: "<IPv4>": x` {
		t.Errorf("MaskIPs = %q / %q", got.Error.Message, got.Error.Causes[0].Message)
	}
	if o.Error.Causes[0].Message == got.Error.Causes[0].Message {
		t.Error("MaskIPs modified its argument")
	}
}
