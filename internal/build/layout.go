package build

// Layout is the prepared buildroot: an overlay of the cached base root
// (Lower) and the target's writable layer (Upper, with Work as overlayfs
// workdir), mounted on Merged only inside the build's sandbox. With an
// empty Lower, Merged is a plain directory used as the root.
//
// It mirrors buildroot.Layout field by field so that the two can be
// converted until build uses that type directly.
type Layout struct {
	Lower, Upper, Work, Merged string
	CacheKey                   string
	CacheHit                   bool
	Backend                    string
}
