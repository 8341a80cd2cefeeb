package buildroot

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cloud-builder/cb/internal/target"
)

// LayoutFile is the name of the layout below a target's Work dir.
const LayoutFile = "layout.json"

// Layout is how a prepared buildroot is handed to the build step: an
// overlay of a read-only cached base root (Lower) and the target's own
// writable Upper (which already holds the package sources and the
// .cb/root overlay). The build step mounts it at Merged inside its own
// private mount namespace, so no mount outlives a build; Prepare never
// mounts anything.
type Layout struct {
	// Lower is the cached root, read-only: one directory, or the layers
	// of a layered root separated by ':', topmost first (the target's
	// build dependencies, then the base). Never write to it.
	Lower  string `json:"lower"`
	Upper  string `json:"upper"`  // overlay upperdir
	Work   string `json:"work"`   // overlay workdir (same file system as Upper)
	Merged string `json:"merged"` // empty mount point, the target's Dir()
	// PackageDir is where the package sources are inside the merged root.
	PackageDir     string `json:"package_dir"`
	SourceKind     string `json:"source_kind"` // debian, dsc or spec
	Profile        string `json:"profile"`
	PackageManager string `json:"package_manager"`
	Backend        string `json:"backend"`
	CacheKey       string `json:"cache_key"`
	CacheHit       bool   `json:"cache_hit"`
	// Layers tells, for a layered root, whether each layer ("base",
	// "target") came from the cache.
	Layers map[string]bool `json:"layers,omitempty"`
}

// lowers returns the cached layers of Lower, topmost first.
func (l *Layout) lowers() []string { return strings.Split(l.Lower, ":") }

// pointsInto returns the generations of the key directory keyDir that
// the layout's lower layers name.
func (l *Layout) pointsInto(keyDir string) []string {
	var gens []string
	for _, lower := range l.lowers() {
		if filepath.Dir(lower) == keyDir {
			gens = append(gens, filepath.Base(lower))
		}
	}
	return gens
}

// OverlayOptions is the data string for mount -t overlay.
func (l *Layout) OverlayOptions() string {
	return fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", l.Lower, l.Upper, l.Work)
}

// LayoutPath is where Prepare writes the layout of t.
func LayoutPath(t target.Target) string { return filepath.Join(t.Work(), LayoutFile) }

// LoadLayout reads the layout Prepare wrote for t and keeps its cached
// root from being evicted for as long as this process runs.
func LoadLayout(t target.Target) (*Layout, error) {
	l, err := readLayout(LayoutPath(t))
	if err != nil {
		return nil, err
	}
	for _, lower := range l.lowers() {
		if err := holdLower(lower); err != nil {
			return nil, fmt.Errorf("read buildroot layout: %w", err)
		}
	}
	return l, nil
}

func readLayout(path string) (*Layout, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read buildroot layout: %w", err)
	}
	var l Layout
	if err := json.Unmarshal(data, &l); err != nil {
		return nil, fmt.Errorf("read buildroot layout %s: %w", path, err)
	}
	// A layered root has several lower dirs, topmost first, separated
	// by ':' as in the overlay's lowerdir option.
	for _, p := range append(l.lowers(), l.Upper, l.Work, l.Merged) {
		// The paths go into a mount data string, where a comma would
		// start another option.
		if !filepath.IsAbs(p) || filepath.Clean(p) != p || strings.ContainsAny(p, ",:\x00\n") {
			return nil, fmt.Errorf("read buildroot layout %s: invalid path %q", path, p)
		}
	}
	return &l, nil
}
