package build

import "path"

// obsBuild runs the Open Build Service's build script the way the original
// cb-run did: `build --no-init --dist default --root /` in the package
// directory. The buildroot is already complete, so build skips its own
// setup (--no-init) and builds in place (--root /); --dist default selects
// <configdir>/default.conf, which a package ships through .cb/root/ (e.g.
// with `Type: dsc` and `Buildengine: dpkg` for Debian sources).
type obsBuild struct{}

var _ Engine = obsBuild{}

// obsTools are the places of the build script: upstream's name and the
// name Debian's obs-build package gives it.
var obsTools = []struct{ tool, configs string }{
	{"/usr/bin/build", "/usr/lib/build/configs"},
	{"/usr/bin/obs-build", "/usr/lib/obs-build/configs"},
}

func (obsBuild) Name() string { return "obs-build" }

// find returns the tool, and the config directory when it is not the
// tool's own (so it must be passed with --configdir).
func (obsBuild) find(r Tree) (tool, configdir string, ok bool) {
	for _, t := range obsTools {
		if !r.Exists(t.tool) {
			continue
		}
		for _, c := range obsTools {
			if r.Exists(path.Join(c.configs, "default.conf")) {
				if c.configs == t.configs {
					return t.tool, "", true
				}
				return t.tool, c.configs, true
			}
		}
	}
	return "", "", false
}

func (e obsBuild) Detect(p *Package) bool {
	_, _, ok := e.find(p.Root)
	return ok
}

func (e obsBuild) Steps(p *Package) ([]Step, error) {
	tool, configdir, _ := e.find(p.Root)
	argv := []string{tool, "--no-init", "--dist", "default", "--root", "/"}
	if configdir != "" {
		argv = append(argv, "--configdir", configdir)
	}
	return []Step{{Argv: argv, Dir: p.Dir}}, nil
}

// ResultDirs are where build leaves packages: rpmbuild's topdir as the
// abuild user or root, and DEBS for Debian builds.
func (obsBuild) ResultDirs(*Package) []ResultDir {
	return []ResultDir{
		{Path: "/home/abuild", Recursive: true},
		{Path: "/usr/src/packages/RPMS", Recursive: true},
		{Path: "/usr/src/packages/SRPMS", Recursive: true},
		{Path: "/usr/src/packages/DEBS", Recursive: true},
	}
}
