package proc

import (
	"strings"
)

// Quote renders argv as POSIX shell words, for logs and for the
// <target>.sh record of a job: arguments made only of characters a shell
// never interprets (the safe set of Python's shlex.quote) stay as they
// are, every other one is single-quoted, with a quote inside written
// '\”. Nothing in Cloud Builder executes the result.
func Quote(argv []string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		out[i] = quoteWord(a)
	}
	return strings.Join(out, " ")
}

func quoteWord(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for _, c := range s {
		if !isSafe(c) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func isSafe(c rune) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.ContainsRune("_@%+=:,./-", c)
}
