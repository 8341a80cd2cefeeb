// Package source manages the git checkout of the sources repository (SPEC
// §2): cloning it, bringing it to the head of a branch, and listing which
// package and image directories changed between two commits.
//
// cb-fetch and cb-scheduler may run on the same machine and touch the same
// checkout; every operation that changes it holds an exclusive flock on a
// lock file next to it (<dir>.lock), readers hold a shared one. The lock
// file lives outside the checkout because a broken checkout is replaced by a
// fresh clone, which must not drop the lock.
//
// git runs as a child process from an argument vector in its own process
// group, without a terminal prompt and restricted to the transports file,
// git, http, https and ssh (no ext::, which would run commands named by a
// URL). Credentials come from the environment, see [Credentials].
//
// # Private repositories
//
// An https token is read from CB_GIT_TOKEN (or the file named by
// CB_GIT_TOKEN_FILE) and sent as HTTP basic authentication (user
// CB_GIT_USER, default x-access-token) through http.<scheme://host/>.extraHeader,
// so git sends it only to the configured host and never over plain http.
// An ssh key is named by CB_GIT_SSH_KEY (and optionally CB_GIT_SSH_KNOWN_HOSTS)
// and used through core.sshCommand = "ssh -i KEY -o IdentitiesOnly=yes -o
// BatchMode=yes". core.sshCommand is run by a shell, so the paths are not
// quoted but restricted to characters no shell treats specially (absolute,
// letters, digits and ._/+-): a path that would need quoting is refused.
//
// Both reach git as GIT_CONFIG_COUNT/GIT_CONFIG_KEY_n/GIT_CONFIG_VALUE_n
// environment variables of the child process, not as -c arguments: another
// user on the machine can read every process's command line in /proc, but
// only the owner can read its environment. Neither is written to the
// checkout's .git/config or to a log.
package source
