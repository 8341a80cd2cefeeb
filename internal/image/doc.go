// Package image builds KIWI appliance images for cb-image: it solves the
// image's package list, runs kiwi-ng system build from a fresh image root,
// bundles the result as an rpm with kiwi-ng result bundle --package-as-rpm
// and sorts that rpm into the target's binaries directory, from where the
// runner's job hands it to the collector.
//
// An image description in the source repository names its Debian archive
// with the placeholder @DEBIAN_MIRROR@; kiwi builds from a copy of the
// description in which package mirror substitutes the runner's own mirror.
//
// Nothing from the source repository reaches kiwi unchecked: profiles are
// plain names, build_arguments pass the allow-list of ValidateBuildArgs,
// the description is copied beneath its root and its KIWI files pass the
// allow-list of CheckDescription and the runner's repository allow-list,
// its scripts run confined by bubblewrap (installChroot), and kiwi runs
// from argument vectors in its own PID, mount and network namespaces and
// cgroup, with a time limit, so a cancelled build leaves neither processes
// nor mounts behind.
package image
