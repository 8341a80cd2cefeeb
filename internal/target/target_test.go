package target

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloud-builder/cb/internal/message"
)

func TestPackageTargetPaths(t *testing.T) {
	tg, err := New("/var/tmp/CB", "projects/MS/xclock", "TW", "x86_64")
	if err != nil {
		t.Fatal(err)
	}
	const base = "/var/tmp/CB/projects/MS/xclock@TW.x86_64"
	for name, tt := range map[string]struct{ got, want string }{
		"Dir":             {tg.Dir(), base},
		"Script":          {tg.Script(), base + ".sh"},
		"PIDFile":         {tg.PIDFile(), base + ".pid"},
		"RunLog":          {tg.RunLog(), base + ".run.log"},
		"PrepareLog":      {tg.PrepareLog(), base + ".prepare.log"},
		"BuildLog":        {tg.BuildLog(), base + ".build.log"},
		"SolverFile":      {tg.SolverFile(), base + ".solver.json"},
		"ResultFile":      {tg.ResultFile(), base + ".result.yml"},
		"Binaries":        {tg.Binaries(), base + ".binaries"},
		"Work":            {tg.Work(), base + ".work"},
		"ScheduledFile":   {tg.ScheduledFile(), "/var/tmp/CB/scheduled/xclock@TW.x86_64.pid"},
		"Name":            {tg.Name(), "xclock"},
		"ID":              {tg.ID(), "xclock@TW.x86_64"},
		"Profile":         {tg.Profile, "TW.x86_64"},
		"DistOrSelection": {tg.DistOrSelection(), "TW"},
		"Arch":            {tg.Arch(), "x86_64"},
		"RepoPath":        {tg.RepoPath(), "projects/MS/TW"},
	} {
		if tt.got != tt.want {
			t.Errorf("%s = %q, want %q", name, tt.got, tt.want)
		}
	}
}

func TestImageTargetPaths(t *testing.T) {
	root := t.TempDir()
	tg, err := New(root, "projects/images/leap/test-image-disk", "standard", "aarch64")
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(root, "projects/images/leap/test-image-disk@standard.aarch64")
	for name, tt := range map[string]struct{ got, want string }{
		"Dir":             {tg.Dir(), base},
		"BuildLog":        {tg.BuildLog(), base + ".build.log"},
		"SolverFile":      {tg.SolverFile(), base + ".solver.json"},
		"ResultFile":      {tg.ResultFile(), base + ".result.yml"},
		"Binaries":        {tg.Binaries(), base + ".binaries"},
		"ScheduledFile":   {tg.ScheduledFile(), filepath.Join(root, "scheduled/test-image-disk@standard.aarch64.pid")},
		"ID":              {tg.ID(), "test-image-disk@standard.aarch64"},
		"DistOrSelection": {tg.DistOrSelection(), "standard"},
		"Arch":            {tg.Arch(), "aarch64"},
		"RepoPath":        {tg.RepoPath(), "projects/images/leap/standard"},
	} {
		if tt.got != tt.want {
			t.Errorf("%s = %q, want %q", name, tt.got, tt.want)
		}
	}
}

func TestRepoPath(t *testing.T) {
	tests := []struct {
		project, dist, arch, want string
	}{
		{"projects/MS/xclock", "TW", "x86_64", "projects/MS/TW"},
		{"projects/xclock", "TW", "x86_64", "projects/TW"},
		{"projects/Debian/bookworm/hello", "Debian_12", "amd64", "projects/Debian/bookworm/Debian_12"},
		// Dots inside the dist stay; only the last dot separates the arch.
		{"projects/Leap/pkg", "15.5", "x86_64", "projects/Leap/15.5"},
	}
	for _, tt := range tests {
		tg, err := New("/r", tt.project, tt.dist, tt.arch)
		if err != nil {
			t.Fatal(err)
		}
		if got := tg.RepoPath(); got != tt.want {
			t.Errorf("RepoPath(%s, %s.%s) = %q, want %q", tt.project, tt.dist, tt.arch, got, tt.want)
		}
		if tg.DistOrSelection() != tt.dist || tg.Arch() != tt.arch {
			t.Errorf("profile %q split into %q and %q", tg.Profile, tg.DistOrSelection(), tg.Arch())
		}
	}
}

func TestNewRejects(t *testing.T) {
	tests := []struct {
		name, project, dist, arch string
	}{
		{"traversal", "projects/../../etc", "TW", "x86_64"},
		{"absolute", "/etc/passwd", "TW", "x86_64"},
		{"outside projects", "etc/x", "TW", "x86_64"},
		{"dist traversal", "projects/MS/xclock", "..", "x86_64"},
		{"dist slash", "projects/MS/xclock", "TW/../../x", "x86_64"},
		{"arch slash", "projects/MS/xclock", "TW", "../x"},
		{"arch empty", "projects/MS/xclock", "TW", ""},
		{"dist NUL", "projects/MS/xclock", "T\x00W", "x86_64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg, err := New("/r", tt.project, tt.dist, tt.arch)
			if err == nil {
				t.Fatalf("New accepted %+v (dir %s)", tg, tg.Dir())
			}
		})
	}
	if _, err := New("/r", "../x", "TW", "x86_64"); !errors.Is(err, message.ErrInvalidProject) {
		t.Errorf("bad project error %v does not wrap message.ErrInvalidProject", err)
	}
}

// Every path of a valid target stays below the runner root.
func TestPathsStayBelowRoot(t *testing.T) {
	root := "/var/tmp/CB"
	tg, err := New(root, "projects/a/b", "x", "y")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{tg.Dir(), tg.Script(), tg.PIDFile(), tg.RunLog(), tg.PrepareLog(), tg.BuildLog(),
		tg.SolverFile(), tg.ResultFile(), tg.Binaries(), tg.Work(), tg.ScheduledFile()} {
		if !strings.HasPrefix(p, root+"/") || filepath.Clean(p) != p {
			t.Errorf("%q leaves %s or is not clean", p, root)
		}
	}
}

func TestForRequest(t *testing.T) {
	pkg := &message.BuildRequest{
		RequestID: "r1", Project: "projects/MS/xclock",
		Package: &message.PackageTarget{Arch: "x86_64", Dist: "TW"},
	}
	tg, err := ForRequest("/r", pkg)
	if err != nil {
		t.Fatal(err)
	}
	if tg.Dir() != "/r/projects/MS/xclock@TW.x86_64" {
		t.Errorf("package target dir %s", tg.Dir())
	}
	img := &message.BuildRequest{
		RequestID: "r2", Project: "projects/images/leap/test-image-disk",
		Image: &message.ImageTarget{Arch: "x86_64", Selection: "standard"},
	}
	tg, err = ForRequest("/r", img)
	if err != nil {
		t.Fatal(err)
	}
	if tg.ID() != "test-image-disk@standard.x86_64" {
		t.Errorf("image target id %s", tg.ID())
	}
	if _, err := ForRequest("/r", &message.BuildRequest{RequestID: "r3", Project: "projects/x"}); err == nil || !strings.Contains(err.Error(), "r3") {
		t.Errorf("request without target: got %v, want an error naming r3", err)
	}
	bad := *pkg
	bad.Project = "projects/../etc"
	if _, err := ForRequest("/r", &bad); err == nil {
		t.Error("ForRequest accepted a traversal project built without the decoder")
	}
}

func TestParseIsTheInverseOfDir(t *testing.T) {
	root := t.TempDir()
	must := func(tg Target, err error) Target {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return tg
	}
	for _, tg := range []Target{
		must(New(root, "projects/MS/xclock", "TW", "x86_64")),
		must(New(root, "projects/images/leap/test-image", "standard.v2", "aarch64")),
		must(Local(root, "cb-image-tbz", "tbz", "x86_64")),
	} {
		got, err := Parse(tg.Root, tg.Dir())
		if err != nil {
			t.Fatalf("Parse(%q): %v", tg.Dir(), err)
		}
		if got != tg {
			t.Errorf("Parse(%q) = %+v, want %+v", tg.Dir(), got, tg)
		}
		if got.IsLocal() != !strings.HasPrefix(tg.Project, "projects/") {
			t.Errorf("%+v: IsLocal %v", got, got.IsLocal())
		}
	}
	// Relative to the runner root, as URL paths name targets.
	got, err := Parse("", "projects/MS/xclock@TW.x86_64")
	if err != nil || got.Project != "projects/MS/xclock" || got.Profile != "TW.x86_64" || got.Root != "" {
		t.Errorf("Parse relative = %+v, %v", got, err)
	}
}

func TestParseRejects(t *testing.T) {
	root := "/var/tmp/CB"
	for _, dir := range []string{
		"/elsewhere/projects/x@a.b",         // not below root
		"/var/tmp/CB/projects/x",            // no profile
		"/var/tmp/CB/projects/x@nodot",      // no arch
		"/var/tmp/CB/projects/x@dist.",      // empty arch
		"/var/tmp/CB/projects/x@.arch",      // empty dist
		"/var/tmp/CB/other/x@a.b",           // not projects/...
		"/var/tmp/CB/projects/x@a b.x86_64", // invalid name
		"/var/tmp/CB/-x@a.b",                // invalid local name
		"/var/tmp/CB",
	} {
		if tg, err := Parse(root, dir); err == nil {
			t.Errorf("Parse(%q) = %+v, want an error", dir, tg)
		}
	}
	for _, dir := range []string{"../projects/x@a.b", "/projects/x@a.b", "projects/../x@a.b"} {
		if tg, err := Parse("", dir); err == nil {
			t.Errorf("Parse(\"\", %q) = %+v, want an error", dir, tg)
		}
	}
}
