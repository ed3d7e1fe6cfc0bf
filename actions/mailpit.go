package actions

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// FindMailpit returns the path of the mailpit binary (the local SMTP
// server the tests and `make demo` use): from $PATH, else from
// $(go env GOPATH)/bin, where `make tools` installs it.
func FindMailpit() (string, error) {
	if p, err := exec.LookPath("mailpit"); err == nil {
		return p, nil
	}
	gopath := os.Getenv("GOPATH")
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		gopath = strings.TrimSpace(string(out))
	}
	for _, dir := range filepath.SplitList(gopath) {
		p := filepath.Join(dir, "bin", "mailpit")
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("mailpit not found in $PATH nor in $(go env GOPATH)/bin (GOPATH=%q)", gopath)
}
