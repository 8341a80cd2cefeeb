package image

import "time"

// TimeBundleID is a bundle id from the build time, UTC, to the second:
// increasing from build to build, and a valid rpm release string.
func TimeBundleID(t time.Time) string { return t.UTC().Format("20060102150405") }
