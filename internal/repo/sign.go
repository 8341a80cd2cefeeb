package repo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/cloud-builder/cb/internal/atomicfile"
)

// PublicKeyArmored and PublicKeyBinary are the file names of the signing
// key below the repo root: the armored form for rpm (`rpm --import`, dnf
// gpgkey=) and the binary keyring apt's signed-by= expects.
const (
	PublicKeyArmored = "repo.key"
	PublicKeyBinary  = "repo.gpg"
)

// DefaultKeyUID is the user id of a key generated on first start.
const DefaultKeyUID = "Cloud Builder Repository <cb-collect@localhost>"

// Signer signs repository metadata with one GPG key held in a GNUPGHOME
// that belongs to the collector and lives outside the served tree.
type Signer struct {
	home        string
	fingerprint string
	logger      *slog.Logger
}

// NewSigner opens the key keyID in home. With an empty keyID it uses the
// first secret key in home, and generates one when there is none, because
// an unsigned repository is useless to apt with signature checking on.
func NewSigner(ctx context.Context, home, keyID string, logger *slog.Logger) (*Signer, error) {
	if logger == nil {
		logger = slog.Default()
	}
	if home == "" {
		return nil, errors.New("open signing key: no GNUPGHOME given")
	}
	abs, err := filepath.Abs(home)
	if err != nil {
		return nil, fmt.Errorf("open signing key: %w", err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("open signing key: %w", err)
	}
	s := &Signer{home: abs, logger: logger}
	fpr, err := s.secretKey(ctx, keyID)
	if err != nil {
		return nil, err
	}
	if fpr == "" {
		if keyID != "" {
			return nil, fmt.Errorf("open signing key: no secret key %q in %s", keyID, abs)
		}
		if _, err := s.gpg(ctx, "--passphrase", "", "--quick-gen-key", DefaultKeyUID, "rsa3072", "sign", "never"); err != nil {
			return nil, fmt.Errorf("generate signing key: %w", err)
		}
		if fpr, err = s.secretKey(ctx, ""); err != nil {
			return nil, err
		}
		if fpr == "" {
			return nil, fmt.Errorf("generate signing key: no secret key in %s afterwards", abs)
		}
		logger.Info("generated repository signing key", "fingerprint", fpr, "gnupg_home", abs)
	}
	s.fingerprint = fpr
	return s, nil
}

// Fingerprint is the signing key's fingerprint.
func (s *Signer) Fingerprint() string { return s.fingerprint }

// Home is the GNUPGHOME in use.
func (s *Signer) Home() string { return s.home }

func (s *Signer) gpg(ctx context.Context, args ...string) ([]byte, error) {
	base := []string{"--batch", "--no-tty", "--homedir", s.home, "--pinentry-mode", "loopback"}
	return run(ctx, append(os.Environ(), "GNUPGHOME="+s.home), "gpg", append(base, args...)...)
}

// secretKey returns the fingerprint of the first usable secret key matching
// keyID (any key when empty), or "" when there is none.
func (s *Signer) secretKey(ctx context.Context, keyID string) (string, error) {
	args := []string{"--with-colons", "--list-secret-keys"}
	if keyID != "" {
		args = append(args, "--", keyID)
	}
	out, err := s.gpg(ctx, args...)
	if err != nil {
		// gpg exits 2 when no key matches; treat that as "none" only if
		// it printed nothing at all.
		if len(out) == 0 {
			return "", nil
		}
		return "", fmt.Errorf("list signing keys: %w", err)
	}
	inSec := false
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Split(line, ":")
		switch {
		case f[0] == "sec":
			// field 2 is validity: skip revoked or expired keys.
			inSec = len(f) > 1 && f[1] != "r" && f[1] != "e"
		case f[0] == "fpr" && inSec && len(f) > 9:
			return f[9], nil
		}
	}
	return "", nil
}

// ExportPublicKey writes the public key to root as repo.key (armored) and
// repo.gpg (binary), replacing each atomically.
func (s *Signer) ExportPublicKey(ctx context.Context, root string) error {
	for _, e := range []struct {
		name  string
		armor bool
	}{{PublicKeyArmored, true}, {PublicKeyBinary, false}} {
		args := []string{"--export"}
		if e.armor {
			args = []string{"--armor", "--export"}
		}
		out, err := s.gpg(ctx, append(args, s.fingerprint)...)
		if err != nil {
			return fmt.Errorf("export public key: %w", err)
		}
		if len(out) == 0 {
			return fmt.Errorf("export public key: gpg wrote nothing for %s", s.fingerprint)
		}
		if err := atomicfile.WriteFile(filepath.Join(root, e.name), out, 0o644); err != nil {
			return fmt.Errorf("export public key: %w", err)
		}
	}
	return nil
}

// SignDetached writes an armored detached signature of in to out
// (repomd.xml.asc, Release.gpg).
func (s *Signer) SignDetached(ctx context.Context, in, out string) error {
	return s.sign(ctx, in, out, "--detach-sign")
}

// ClearSign writes the clear-signed form of in to out (InRelease).
func (s *Signer) ClearSign(ctx context.Context, in, out string) error {
	return s.sign(ctx, in, out, "--clearsign")
}

func (s *Signer) sign(ctx context.Context, in, out, mode string) error {
	_ = os.Remove(out)
	// SHA-256 because apt refuses SHA-1 signatures.
	if _, err := s.gpg(ctx, "--passphrase", "", "--digest-algo", "SHA256", "--local-user", s.fingerprint,
		"--armor", "--output", out, mode, in); err != nil {
		return fmt.Errorf("sign %s: %w", filepath.Base(in), err)
	}
	return nil
}

// Close stops the gpg-agent that signing started for this GNUPGHOME, so no
// daemon outlives the collector.
func (s *Signer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), defaultToolTimeout)
	defer cancel()
	if _, err := run(ctx, nil, "gpgconf", "--homedir", s.home, "--kill", "gpg-agent"); err != nil {
		return fmt.Errorf("stop gpg-agent: %w", err)
	}
	return nil
}

// SignRPM adds an OpenPGP signature by the repository key to the rpm at
// path, in place.
func (s *Signer) SignRPM(ctx context.Context, path string) error {
	gpg, err := exec.LookPath("gpg")
	if err != nil {
		return fmt.Errorf("sign %s: %w", filepath.Base(path), err)
	}
	// rpm expands macros in --define values; a % in a path would be
	// interpreted rather than used.
	for _, v := range []string{gpg, s.home} {
		if strings.ContainsAny(v, "%\n") {
			return fmt.Errorf("sign %s: path %q contains %% or a newline", filepath.Base(path), v)
		}
	}
	if _, err := run(ctx, append(os.Environ(), "GNUPGHOME="+s.home), "rpmsign", "--addsign",
		"--define", "__gpg "+gpg, "--define", "_gpg_name "+s.fingerprint, "--define", "_gpg_path "+s.home,
		"--", path); err != nil {
		return fmt.Errorf("sign %s: %w", filepath.Base(path), err)
	}
	return nil
}
