//go:build !(linux && (amd64 || arm64))

package repo

func exchange(a, b string) error { return exchangeByRename(a, b) }
