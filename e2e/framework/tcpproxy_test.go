package framework

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// TestTCPProxyModes: pass forwards, black hole delivers nothing while the
// connection stays open, drop closes connections (old and new), delay
// delivers no sooner than the delay, and pass again heals. No cluster.
func TestTCPProxyModes(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	p, err := StartTCPProxy(echo.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	dial := func() (net.Conn, *bufio.Reader) {
		t.Helper()
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}
	roundTrip := func(c net.Conn, r *bufio.Reader, wait time.Duration) (string, error) {
		if _, err := c.Write([]byte("ping\n")); err != nil {
			return "", err
		}
		_ = c.SetReadDeadline(time.Now().Add(wait))
		return r.ReadString('\n')
	}

	c, r := dial()
	if got, err := roundTrip(c, r, 5*time.Second); err != nil || got != "ping\n" {
		t.Fatalf("pass: %q, %v", got, err)
	}
	p.Set(ProxyBlackHole, 0)
	if got, err := roundTrip(c, r, 300*time.Millisecond); err == nil {
		t.Fatalf("black hole delivered %q", got)
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("black hole: %v, want a read timeout (the connection stays open)", err)
	}
	p.Set(ProxyDrop, 0)
	if _, err := roundTrip(c, r, 5*time.Second); err == nil {
		t.Fatal("drop: the old connection still works")
	}
	c2, r2 := dial()
	if got, err := roundTrip(c2, r2, 5*time.Second); err == nil {
		t.Fatalf("drop: a new connection delivered %q", got)
	}
	p.Set(ProxyDelay, 300*time.Millisecond)
	c3, r3 := dial()
	start := time.Now()
	if got, err := roundTrip(c3, r3, 10*time.Second); err != nil || got != "ping\n" {
		t.Fatalf("delay: %q, %v", got, err)
	}
	if d := time.Since(start); d < 600*time.Millisecond {
		t.Errorf("delay: answered after %s, want at least 2×300ms (both directions)", d)
	}
	p.Set(ProxyPass, 0)
	c4, r4 := dial()
	if got, err := roundTrip(c4, r4, 5*time.Second); err != nil || got != "ping\n" {
		t.Fatalf("pass again: %q, %v", got, err)
	}
}

// TestKubeconfigVia rewrites every cluster's server and keeps the rest.
func TestKubeconfigVia(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["c"] = &clientcmdapi.Cluster{Server: "https://127.0.0.1:6443", CertificateAuthorityData: []byte("ca")}
	cfg.AuthInfos["u"] = &clientcmdapi.AuthInfo{Token: "secret"}
	cfg.Contexts["x"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	cfg.CurrentContext = "x"
	if err := clientcmd.WriteToFile(*cfg, src); err != nil {
		t.Fatal(err)
	}
	if err := KubeconfigVia(src, dst, "https://127.0.0.1:7000"); err != nil {
		t.Fatal(err)
	}
	got, err := clientcmd.LoadFromFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if s := got.Clusters["c"].Server; s != "https://127.0.0.1:7000" {
		t.Errorf("server %s", s)
	}
	if string(got.Clusters["c"].CertificateAuthorityData) != "ca" || got.AuthInfos["u"].Token != "secret" || got.CurrentContext != "x" {
		t.Errorf("lost the rest: %+v", got)
	}
	b, _ := os.ReadFile(dst)
	if !strings.Contains(string(b), "127.0.0.1:7000") {
		t.Errorf("file: %s", b)
	}
}
