// Package depsolver is cb-depsolver: it keeps the dependency graph of every
// build target of the sources repository and requests builds in
// dependency order.
//
// A target (a package's DIST.ARCH or an image's SELECTION.ARCH) needs
// names: the Build-Depends of its debian/control or .dsc (alternatives and
// version relations), the BuildRequires of its .spec, the packages of its
// .cb/build_root.kiwi and, for images, the packages of the image
// description. It provides names: the binary packages (and virtual
// provides) its sources declare and, once built, those the collector
// published. A need of target T is served by another target of the same
// repository scope (the repository T publishes into, plus the extra
// repositories of T's .cb/depsolver.yml), otherwise by the base
// repositories of T's buildroot; when neither provides it, T is
// unresolvable and is never started.
//
// The graph is ordered by strongly connected components (Tarjan) and then
// topologically, ties broken by target id, so the same sources always give
// the same order. [Engine] holds the build state of every target and turns
// events (source changes, accepted and final responses, publications,
// base repository changes) into build requests:
//
//   - A target waits (blocked) while one of its dependencies is queued or
//     building, and is requested when they have published.
//   - When a dependency publishes binaries whose versions or normalised
//     contents changed, its dependents are rebuilt according to their
//     project's cascade mode; an unchanged output stops the cascade.
//   - A failed dependency blocks nothing: dependents build against its last
//     good binaries.
//   - The members of a dependency cycle are built in id order and get at
//     most two passes per change.
package depsolver
