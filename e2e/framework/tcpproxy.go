package framework

import (
	"fmt"
	"net"
	"sync"
	"time"

	"k8s.io/client-go/tools/clientcmd"
)

// ProxyMode is what a TCPProxy does with the traffic it carries.
type ProxyMode int

const (
	// ProxyPass forwards every byte at once.
	ProxyPass ProxyMode = iota
	// ProxyDrop closes every connection, and every new one as soon as it
	// is accepted: the peer sees resets and EOFs at once.
	ProxyDrop
	// ProxyBlackHole keeps connections open but delivers nothing in
	// either direction, as a network that silently loses packets: the
	// peer only notices by timing out. Like TCP's retransmissions, what
	// was sent meanwhile is delivered once the mode changes back (a
	// lost byte would corrupt the TLS stream, which no network does).
	ProxyBlackHole
	// ProxyDelay forwards every chunk after the proxy's delay (both
	// directions): a slow apiserver.
	ProxyDelay
)

func (m ProxyMode) String() string {
	switch m {
	case ProxyPass:
		return "pass"
	case ProxyDrop:
		return "drop"
	case ProxyBlackHole:
		return "black hole"
	case ProxyDelay:
		return "delay"
	}
	return fmt.Sprintf("ProxyMode(%d)", int(m))
}

// TCPProxy is a loopback TCP proxy the test controls, put between one
// client (a webhook replica's kubeconfig) and a server (the apiserver) to
// cut, black-hole or slow down that client's traffic alone. TLS passes
// through untouched, so the client still verifies the server's
// certificate (127.0.0.1 is in the apiserver's).
type TCPProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	mode  ProxyMode
	delay time.Duration
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// StartTCPProxy listens on a free loopback port and forwards to target
// (host:port) in ProxyPass mode.
func StartTCPProxy(target string) (*TCPProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &TCPProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is host:port of the proxy.
func (p *TCPProxy) Addr() string { return p.ln.Addr().String() }

// Set switches the mode (delay matters for ProxyDelay only). ProxyDrop
// closes the open connections at once.
func (p *TCPProxy) Set(mode ProxyMode, delay time.Duration) {
	p.mu.Lock()
	p.mode, p.delay = mode, delay
	var drop []net.Conn
	if mode == ProxyDrop {
		for c := range p.conns {
			drop = append(drop, c)
		}
	}
	p.mu.Unlock()
	for _, c := range drop {
		_ = c.Close()
	}
}

func (p *TCPProxy) state() (ProxyMode, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode, p.delay
}

// Close stops listening and closes every connection.
func (p *TCPProxy) Close() error {
	err := p.ln.Close()
	p.Set(ProxyDrop, 0)
	p.wg.Wait()
	return err
}

func (p *TCPProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode == ProxyDrop {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *TCPProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	_ = c.Close()
}

func (p *TCPProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			_ = c.Close()
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.untrack(c)
			up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
			if err != nil {
				return
			}
			if !p.track(up) {
				_ = up.Close()
				return
			}
			defer p.untrack(up)
			done := make(chan struct{}, 2)
			go func() { p.pump(up, c); done <- struct{}{} }()
			go func() { p.pump(c, up); done <- struct{}{} }()
			<-done // one side ended: end both
		}()
	}
}

// pump copies src to dst chunk by chunk, applying the mode in force when
// each chunk arrives.
func (p *TCPProxy) pump(dst, src net.Conn) {
	defer func() { _ = dst.Close(); _ = src.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			mode, delay := p.state()
			for mode == ProxyBlackHole {
				time.Sleep(20 * time.Millisecond)
				mode, delay = p.state()
			}
			switch mode {
			case ProxyDrop:
				return
			case ProxyDelay:
				time.Sleep(delay)
				if m, _ := p.state(); m == ProxyDrop {
					return
				}
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF, reset or closed by Set(ProxyDrop)
		}
	}
}

// KubeconfigVia writes to dst a copy of the kubeconfig src whose clusters
// all point at server (https://host:port): a client of dst goes through a
// TCPProxy with the same credentials and certificate checks.
func KubeconfigVia(src, dst, server string) error {
	cfg, err := clientcmd.LoadFromFile(src)
	if err != nil {
		return err
	}
	for _, c := range cfg.Clusters {
		c.Server = server
	}
	return clientcmd.WriteToFile(*cfg, dst)
}
