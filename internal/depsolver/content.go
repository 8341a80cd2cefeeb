package depsolver

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"

	"pault.ag/go/debian/deb"
)

// maxPackageSize bounds a package download for content comparison.
const maxPackageSize = 2 << 30

// ContentDigest returns a digest of a package's normalised content: its
// control data (deb) or header relations (rpm) and, per file, path, mode,
// owner, size, link target and content digest, sorted by path. Timestamps
// and build hosts are left out, so a rebuild of the same sources that
// produces the same files gets the same digest.
func ContentDigest(ctx context.Context, file, format string) (string, error) {
	if format == FormatRPM {
		return rpmContentDigest(ctx, file)
	}
	return debContentDigest(file)
}

func debContentDigest(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	d, err := deb.Load(f, file)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", file, err)
	}
	defer d.Close()
	var lines []string
	for k, v := range d.Control.Values {
		lines = append(lines, "control "+k+": "+v)
	}
	for {
		hdr, err := d.Data.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("read %s: %w", file, err)
		}
		h := sha256.New()
		if hdr.Typeflag == tar.TypeReg {
			if _, err := io.Copy(h, d.Data); err != nil {
				return "", fmt.Errorf("read %s: %w", file, err)
			}
		}
		lines = append(lines, fmt.Sprintf("file %s %c %o %d:%d %d %s %x", strings.TrimPrefix(hdr.Name, "."),
			hdr.Typeflag, hdr.Mode, hdr.Uid, hdr.Gid, hdr.Size, hdr.Linkname, h.Sum(nil)))
	}
	return digestLines(lines), nil
}

// rpmContentDigest asks rpm for the header data that describes content;
// rpm checks file digests itself, and its BUILDTIME, BUILDHOST and file
// mtimes are not queried.
func rpmContentDigest(ctx context.Context, file string) (string, error) {
	qf := "%{NAME} %{EPOCH}:%{VERSION}-%{RELEASE} %{ARCH}\n" +
		"[file %{FILENAMES} %{FILEMODES:octal} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILESIZES} %{FILELINKTOS} %{FILEDIGESTS}\n]" +
		"[provides %{PROVIDENEVRS}\n][requires %{REQUIRENEVRS}\n]"
	cmd := exec.CommandContext(ctx, "rpm", "-qp", "--nosignature", "--nodigest", "--qf", qf, "--", file)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("rpm -qp %s: %w: %s", file, err, strings.TrimSpace(stderr.String()))
	}
	return digestLines(strings.Split(strings.TrimSpace(out.String()), "\n")), nil
}

func digestLines(lines []string) string {
	sort.Strings(lines)
	h := sha256.New()
	for _, l := range lines {
		io.WriteString(h, l)
		io.WriteString(h, "\n")
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// DownloadDigest fetches a package file and returns its normalised
// content digest.
func DownloadDigest(ctx context.Context, u, format string) (string, error) {
	body, err := open(ctx, u)
	if err != nil {
		return "", err
	}
	defer body.Close()
	tmp, err := os.CreateTemp("", "cb-depsolver-*.pkg")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	n, err := io.Copy(tmp, io.LimitReader(body, maxPackageSize+1))
	if err != nil {
		return "", fmt.Errorf("download %s: %w", u, err)
	}
	if n > maxPackageSize {
		return "", fmt.Errorf("download %s: larger than %d bytes", u, maxPackageSize)
	}
	return ContentDigest(ctx, tmp.Name(), format)
}
