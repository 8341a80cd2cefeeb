package buildroot

import "github.com/cloud-builder/cb/internal/mountinfo"

// removeAll deletes dir after detaching anything mounted below it, so a
// leftover bind mount (a killed tool's /dev or /proc) is never descended
// into and emptied.
func removeAll(dir string) error { return mountinfo.RemoveAll(dir) }
