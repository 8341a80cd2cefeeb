package job

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestImageTarget(t *testing.T) {
	root := t.TempDir()
	tests := []struct {
		name, dir                  string
		wantDir, wantRepo, errPart string
	}{
		{
			name:     "below the runner root",
			dir:      filepath.Join(root, "projects/images/leap/test-image-disk@standard.x86_64"),
			wantDir:  filepath.Join(root, "projects/images/leap/test-image-disk@standard.x86_64"),
			wantRepo: "projects/images/leap/standard",
		},
		{
			name:     "elsewhere",
			dir:      "/srv/img/test-image-disk@standard.x86_64",
			wantDir:  "/srv/img/test-image-disk@standard.x86_64",
			wantRepo: "standard",
		},
		{name: "no profile", dir: "/srv/img/test-image-disk", errPart: "want <project>@<DIST|SELECTION>.<ARCH>"},
		{name: "no arch", dir: "/srv/img/test-image-disk@standard", errPart: "SELECTION.ARCH"},
		{name: "bad selection", dir: "/srv/img/x@$(id).x86_64", errPart: "invalid name"},
		{name: "bad project", dir: filepath.Join(root, "projects/a b/x@standard.x86_64"), errPart: "projects/a b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg, err := ImageTarget(tt.dir, root)
			if tt.errPart != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errPart) {
					t.Fatalf("ImageTarget(%q) = %+v, %v; want an error with %q", tt.dir, tg, err, tt.errPart)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tg.Dir() != tt.wantDir || tg.RepoPath() != tt.wantRepo {
				t.Errorf("ImageTarget(%q): dir %s repo %s, want %s and %s", tt.dir, tg.Dir(), tg.RepoPath(), tt.wantDir, tt.wantRepo)
			}
		})
	}
}
