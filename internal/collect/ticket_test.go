package collect_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloud-builder/cb/internal/collect"
	"github.com/cloud-builder/cb/internal/repo/repotest"
	"github.com/cloud-builder/cb/internal/upload"
)

// treeState is every file and symlink below root with its content hash,
// the bookkeeping included.
func treeState(t *testing.T, root string) map[string]string {
	t.Helper()
	st := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			st[rel] = "-> " + l
			return err
		case d.IsDir():
			st[rel+"/"] = "dir"
			return nil
		}
		b, err := os.ReadFile(p)
		sum := sha256.Sum256(b)
		st[rel] = hex.EncodeToString(sum[:])
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func mint(t *testing.T, c upload.Claims) string {
	t.Helper()
	tk, err := upload.MintTicket([]byte(testToken), c)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// A ticket publishes its own request's build, and nothing else: an
// upload into another project's repository, or into its own repository
// under another project's name, is refused with 403 and leaves the tree
// as it was; an expired or forged ticket is refused with 401.
func TestTicketBindsUploadToItsRepository(t *testing.T) {
	repotest.RequireTools(t, "gpg", "dpkg-deb")
	ts := newServer(t, nil)
	ctx := ctxT(t)
	valid := time.Now().Add(time.Hour)

	// The victim: another project's package, published with the plain
	// token, in its own repository and in a shared one.
	victim := debUpload(t, "victim", "1.0", "amd64", "x86_64", "bookworm")
	victim.Project, victim.RepoPath, victim.RequestID = "projects/Other/victim", "projects/Other/bookworm", "victim-1"
	if err := ts.client().Upload(ctx, victim); err != nil {
		t.Fatal(err)
	}
	neighbour := debUpload(t, "neighbour", "1.0", "amd64", "x86_64", "bookworm")
	if err := ts.client().Upload(ctx, neighbour); err != nil {
		t.Fatal(err)
	}

	// The attacker's ticket is valid for its own build.
	own := debUpload(t, "hello", "1.0", "amd64", "x86_64", "bookworm")
	ticket := mint(t, upload.ClaimsFor(own, valid))
	c := ts.client()
	c.Token = ticket

	before := treeState(t, ts.cfg.RepoRoot)
	for name, u := range map[string]upload.Upload{
		// A package named like the victim, into the victim's repository.
		"other project's repository": func() upload.Upload {
			u := debUpload(t, "victim", "6.6.6", "amd64", "x86_64", "bookworm")
			u.Project, u.RepoPath, u.RequestID = "projects/Other/victim", "projects/Other/bookworm", own.RequestID
			return u
		}(),
		// Its own repository, but replacing a neighbour's package there.
		"other project in a shared repository": func() upload.Upload {
			u := debUpload(t, "neighbour", "6.6.6", "amd64", "x86_64", "bookworm")
			u.RequestID = own.RequestID
			return u
		}(),
		"other dist": func() upload.Upload {
			u := debUpload(t, "hello", "6.6.6", "amd64", "x86_64", "trixie")
			u.RequestID = own.RequestID
			return u
		}(),
		"other request": func() upload.Upload {
			u := own
			u.RequestID = "someone-elses-request"
			return u
		}(),
	} {
		t.Run(name, func(t *testing.T) {
			err := c.Upload(ctx, u)
			var refused *collect.Error
			if !errors.As(err, &refused) || refused.Status != http.StatusForbidden {
				t.Fatalf("upload = %v, want a 403 refusal", err)
			}
			if !strings.Contains(refused.Message, "upload ticket is for") {
				t.Errorf("refusal %q does not say what the ticket is for", refused.Message)
			}
		})
	}
	expired := ts.client()
	expired.Token = mint(t, upload.ClaimsFor(own, time.Now().Add(-time.Second)))
	forged := ts.client()
	forged.Token = ticket[:len(ticket)-4] + "AAAA"
	for name, cl := range map[string]*collect.Client{"expired": expired, "forged": forged} {
		err := cl.Upload(ctx, own)
		var refused *collect.Error
		if !errors.As(err, &refused) || refused.Status != http.StatusUnauthorized {
			t.Errorf("%s ticket: upload = %v, want a 401 refusal", name, err)
		} else if name == "expired" && !strings.Contains(refused.Message, "expired") {
			t.Errorf("expired ticket: refusal %q does not say so", refused.Message)
		}
	}
	after := treeState(t, ts.cfg.RepoRoot)
	for p, h := range before {
		if after[p] != h {
			t.Errorf("%s changed: %q -> %q", p, h, after[p])
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s appeared", p)
		}
	}
	if !stagingEmpty(t, ts) {
		t.Error("a refused upload left files in staging")
	}

	// The ticket's own build goes through.
	if err := c.Upload(ctx, own); err != nil {
		t.Fatalf("upload with a ticket for it: %v", err)
	}
	if !exists(filepath.Join(ts.cfg.RepoRoot, "projects/Debian/bookworm", own.Files[0].Name)) {
		t.Errorf("the ticket's own upload is not in its repository")
	}
}
