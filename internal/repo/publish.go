package repo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// defaultToolTimeout bounds housekeeping tool calls that have no caller
// context (stopping gpg-agent).
const defaultToolTimeout = 30 * time.Second

// Publisher turns a repository's files into signed metadata.
type Publisher struct {
	Signer *Signer
	Logger *slog.Logger
	// Createrepo is the createrepo_c binary; "createrepo_c" when empty.
	Createrepo string
	// RPMDatabase also writes the sqlite databases old yum clients use;
	// off by default because they cost most of the time on big repos.
	RPMDatabase bool
}

func (p *Publisher) createrepo() string {
	if p.Createrepo != "" {
		return p.Createrepo
	}
	return "createrepo_c"
}

// Publish regenerates and signs the metadata of r and clears its update
// mark. A repository without packages is removed entirely. The caller
// holds r's lock.
func (p *Publisher) Publish(ctx context.Context, r Repository) error {
	if p.Signer == nil {
		return errors.New("publish: no signer")
	}
	builds, err := r.Builds()
	if err != nil {
		return err
	}
	if len(builds) == 0 {
		if err := os.RemoveAll(r.Dir()); err != nil {
			return fmt.Errorf("remove empty repository %s: %w", r.Path, err)
		}
		return nil
	}
	t, err := r.Type()
	if err != nil {
		return err
	}
	switch t {
	case RPM:
		err = p.publishRPM(ctx, r, builds)
	case Deb:
		err = p.publishDeb(ctx, r, builds)
	default:
		err = fmt.Errorf("publish %s: repository has no type", r.Path)
	}
	if err != nil {
		return err
	}
	return r.clearDirty()
}

// CheckPackage makes sure path is a package of type t that the metadata
// tools can read, so one broken upload cannot make every later metadata
// update of its repository fail.
func CheckPackage(ctx context.Context, path string, t Type) error {
	var err error
	switch t {
	case Deb:
		_, err = run(ctx, nil, "dpkg-deb", "--field", path, "Package", "Version", "Architecture")
	case RPM:
		_, err = run(ctx, nil, "rpm", "--query", "--package", "--nosignature", "--nodigest", "--queryformat", "%{NAME}", path)
	default:
		err = fmt.Errorf("unknown repository type %q", t)
	}
	if err != nil {
		return fmt.Errorf("not a readable %s package: %w", t, err)
	}
	return nil
}
