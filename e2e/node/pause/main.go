// Command pause is the sandbox ("pause") container of the e2e node: it holds
// the Pod's namespaces open and sleeps until told to stop. Built by
// e2e/node/node.sh into an image of its own, so no image is pulled.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// As PID 1 of a Pod with a shared process namespace it would also adopt
	// orphans; reaping them keeps zombies out of the Pod.
	signal.Ignore(syscall.SIGHUP)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s == syscall.SIGCHLD {
			for {
				var ws syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
			continue
		}
		return
	}
}
